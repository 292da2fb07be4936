//! `hone-operator`: runs the Dataset, TrainingJob, ModelVersion and
//! InferenceService controllers.

use clap::{Parser, Subcommand};

/// Hone's Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "hone-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG (or in-cluster config).
    Run {
        /// Address for /metrics, /healthz and /readyz.
        #[arg(long, env = "HONE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: String,
        /// Namespaces to watch (comma-separated); empty: all namespaces.
        #[arg(long, env = "HONE_WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
    },
    /// Print the CustomResourceDefinitions this operator serves, as YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } => {
            anyhow::bail!("the controllers are not implemented yet (tracked in issue 6); nothing was started")
        }
        Command::Crds => {
            for crd in hone_crds::all_crds() {
                print!("---\n{}", serde_yaml_string(&crd)?);
            }
            Ok(())
        }
    }
}

fn serde_yaml_string<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(value)?)
}
