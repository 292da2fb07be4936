// Command health-runner runs the Argo CD health checks in config/argocd/health
// against the fixtures in config/argocd/test/cases.lua in gopher-lua, the Lua
// VM Argo CD runs them in, set up the way Argo CD's util/lua sets it up for a
// health check:
//   - no standard libraries but package, base and table (no string, math, io;
//     os only as a module of time functions that `require("os")` loads);
//   - the object as the global `obj`, decoded from JSON (maps to tables,
//     arrays to sequences, numbers to numbers, null to nil);
//   - a one-second deadline;
//   - the returned table read as {status, message}.
//
// It also checks that config/argocd/argocd-cm.yaml embeds every script byte
// for byte, and that the VM really lacks what Argo CD lacks (a script calling
// string.format must fail here, as it would in Argo CD).
//
// Usage: health-runner <config/argocd directory>
// Prints one line per check, then exactly "N passed, N failed"; exits 1 on any failure.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v3"
)

var kinds = []string{"Dataset", "TrainingJob", "ModelVersion", "InferenceService"}

// Argo CD's health statuses.
var statuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

type tally struct{ passed, failed int }

func (t *tally) ok(name string) {
	t.passed++
	fmt.Println("ok     " + name)
}

func (t *tally) fail(name, why string) {
	t.failed++
	fmt.Println("FAILED " + name + ": " + why)
}

// osTime is the one function of the restricted os module: seconds since the epoch.
func osTime(l *lua.LState) int {
	l.Push(lua.LNumber(time.Now().Unix()))
	return 1
}

func loadSafeOs(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{"time": osTime}))
	return 1
}

// healthVM is a Lua state with the libraries Argo CD opens for health checks.
func healthVM() *lua.LState {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, loadSafeOs)
	return l
}

// decode turns a JSON-decoded value into Lua values, as Argo CD hands objects to scripts.
func decode(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, x := range v {
			t.RawSetString(k, decode(l, x))
		}
		return t
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, x := range v {
			t.Append(decode(l, x))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

// plain turns a fixture's Lua table into plain values (a table with only
// keys 1..n is an array), the shape encoding/json gives an API object.
func plain(v lua.LValue) any {
	switch v := v.(type) {
	case *lua.LTable:
		n := v.Len()
		count := 0
		v.ForEach(func(lua.LValue, lua.LValue) { count++ })
		if n > 0 && n == count {
			out := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				out = append(out, plain(v.RawGetInt(i)))
			}
			return out
		}
		out := map[string]any{}
		v.ForEach(func(k, x lua.LValue) { out[k.String()] = plain(x) })
		return out
	case lua.LString:
		return string(v)
	case lua.LNumber:
		return float64(v)
	case lua.LBool:
		return bool(v)
	default:
		return nil
	}
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// evaluate runs `script` on `object` as Argo CD runs a health check.
func evaluate(script string, object any) (*health, error) {
	// Through JSON and back, as the object reaches Argo CD from the API server.
	raw, err := json.Marshal(object)
	if err != nil {
		return nil, err
	}
	var decoded any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return nil, err
	}
	l := healthVM()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, decoded))
	if err := l.DoString(script); err != nil {
		return nil, fmt.Errorf("raised: %v", err)
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("returned %s, not a table", l.Get(-1).Type())
	}
	var h health
	if s, ok := result.RawGetString("status").(lua.LString); ok {
		h.Status = string(s)
	}
	if m, ok := result.RawGetString("message").(lua.LString); ok {
		h.Message = string(m)
	}
	if !statuses[h.Status] {
		return nil, fmt.Errorf("returned status %q, not an Argo CD health status", h.Status)
	}
	if h.Message == "" {
		return nil, fmt.Errorf("returned no message")
	}
	return &h, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: health-runner <config/argocd directory>")
		os.Exit(2)
	}
	dir := os.Args[1]
	var t tally

	// 1. The scripts, and their copies in argocd-cm.yaml.
	scripts := map[string]string{}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if text, err := os.ReadFile(filepath.Join(dir, "argocd-cm.yaml")); err != nil {
		t.fail("argocd-cm.yaml", "cannot read: "+err.Error())
	} else if err := yaml.Unmarshal(text, &cm); err != nil {
		t.fail("argocd-cm.yaml", "not YAML: "+err.Error())
	}
	for _, kind := range kinds {
		source, err := os.ReadFile(filepath.Join(dir, "health", kind+".lua"))
		if err != nil {
			t.fail(kind+".lua", "cannot read: "+err.Error())
			continue
		}
		scripts[kind] = string(source)
		key := "resource.customizations.health.hone.dev_" + kind
		switch embedded, found := cm.Data[key]; {
		case !found:
			t.fail(key, "missing from argocd-cm.yaml: run hack/gen-kustomize.sh")
		case embedded != string(source):
			t.fail(key, "differs from health/"+kind+".lua: run hack/gen-kustomize.sh")
		default:
			t.ok(key + " embeds health/" + kind + ".lua")
		}
	}

	// 2. The VM lacks what Argo CD's lacks.
	for name, script := range map[string]string{
		"string library":  `return {status = "Healthy", message = string.format("%d", 1)}`,
		"math library":    `return {status = "Healthy", message = tostring(math.floor(1.5))}`,
		"io library":      `return {status = "Healthy", message = io.read("*a")}`,
		"global os.exit":  `os.exit(1)`,
		"endless loop":    `while true do end`,
		"no table return": `return "Healthy"`,
	} {
		if _, err := evaluate(script, map[string]any{}); err == nil {
			t.fail("sandbox: "+name, "a script using it passed; Argo CD's VM refuses it")
		} else {
			t.ok("sandbox: " + name + " refused")
		}
	}

	// 3. Every fixture through its kind's script.
	fixtures := lua.NewState()
	defer fixtures.Close()
	if err := fixtures.DoFile(filepath.Join(dir, "test", "cases.lua")); err != nil {
		t.fail("cases.lua", err.Error())
	}
	cases, _ := fixtures.Get(-1).(*lua.LTable)
	covered := map[string]int{}
	if cases != nil {
		for i := 1; i <= cases.Len(); i++ {
			c, _ := cases.RawGetInt(i).(*lua.LTable)
			if c == nil {
				t.fail(fmt.Sprintf("case %d", i), "not a table")
				continue
			}
			kind, name := c.RawGetString("kind").String(), c.RawGetString("name").String()
			label := kind + ": " + name
			source, found := scripts[kind]
			if !found {
				t.fail(label, "no health script for kind "+kind)
				continue
			}
			covered[kind]++
			h, err := evaluate(source, plain(c.RawGetString("obj")))
			want := c.RawGetString("status").String()
			wantMessage, hasMessage := c.RawGetString("message").(lua.LString)
			switch {
			case err != nil:
				t.fail(label, err.Error())
			case h.Status != want:
				t.fail(label, fmt.Sprintf("status %s (%s), want %s", h.Status, h.Message, want))
			case hasMessage && h.Message != string(wantMessage):
				t.fail(label, fmt.Sprintf("message %q, want %q", h.Message, string(wantMessage)))
			default:
				t.ok(label + " -> " + h.Status)
			}
		}
	}
	for _, kind := range kinds {
		if covered[kind] == 0 {
			t.fail(kind, "no fixtures in cases.lua")
		}
	}
	fmt.Printf("%d passed, %d failed\n", t.passed, t.failed)
	if t.failed > 0 {
		os.Exit(1)
	}
}
