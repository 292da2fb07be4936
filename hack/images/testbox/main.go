// Command testbox is the small static image the real-node tests run
// (hone.local/testbox). Subcommands:
//
//	testbox echo WORDS...          print WORDS and exit 0
//	testbox serve PORT MESSAGE     answer every HTTP request with MESSAGE
//	testbox get URL [TRIES]        GET URL (retrying), print the body, exit 0 on 200
//	testbox exit CODE              exit with CODE
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testbox echo|serve|get|exit ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "serve":
		serve(args)
	case "get":
		get(args)
	case "exit":
		code, _ := strconv.Atoi(strings.Join(args, ""))
		os.Exit(code)
	default:
		fmt.Fprintf(os.Stderr, "testbox: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: testbox serve PORT MESSAGE")
		os.Exit(2)
	}
	msg := args[1]
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("testbox: %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintln(w, msg)
	})
	srv := &http.Server{Addr: ":" + args[0], ReadHeaderTimeout: 5 * time.Second}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		_ = srv.Close()
	}()
	fmt.Printf("testbox: serving on :%s\n", args[0])
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testbox:", err)
		os.Exit(1)
	}
}

func get(args []string) {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: testbox get URL [TRIES]")
		os.Exit(2)
	}
	tries := 30
	if len(args) > 1 {
		tries, _ = strconv.Atoi(args[1])
	}
	client := &http.Client{Timeout: 3 * time.Second}
	var last error
	for i := 0; i < tries; i++ {
		resp, err := client.Get(args[0])
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("testbox: got %s", body)
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		fmt.Fprintf(os.Stderr, "testbox: try %d: %v\n", i+1, err)
		time.Sleep(time.Second)
	}
	fmt.Fprintln(os.Stderr, "testbox: giving up:", last)
	os.Exit(1)
}
