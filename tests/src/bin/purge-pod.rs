//! Stands in for a purge pod on the test cluster, where KWOK completes pods
//! without running them: runs `hone_storage::purge::purge`, the code
//! `hone-trainer purge` runs, with the purge Job's container arguments
//! (`purge --uri U... [--prefix]`) and the storage credentials in the
//! environment (`AWS_*`, as the Job's Secret would give them). Prints how many
//! objects it deleted.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(("purge", rest)) = args.split_first().map(|(c, r)| (c.as_str(), r)) else {
        eprintln!("usage: purge-pod purge --uri URI... [--prefix]");
        return ExitCode::from(2);
    };
    let mut uris = Vec::new();
    let mut prefix = false;
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.clone().next()) {
            ("--uri", Some(uri)) => {
                uris.push(uri.clone());
                rest.next();
            }
            ("--prefix", _) => prefix = true,
            (other, _) => {
                eprintln!("purge-pod: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    // As in hone-trainer: ring, chosen explicitly (the workspace links two providers).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("purge-pod: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hone_storage::purge::purge(&uris, prefix)) {
        Ok(deleted) => {
            println!("{deleted}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("purge-pod: {e}");
            ExitCode::FAILURE
        }
    }
}
