//! `kubectl hone`: the lineage of Hone's objects, manual promote of a canary
//! rollout, and manual rollback (of a rollout in progress, or to a variant's
//! previous good version after a promotion). kubectl runs it as a plugin when
//! the binary `kubectl-hone` is on PATH.

mod action;
mod cluster;
mod lineage;
mod render;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hone_crds::inferenceservice::RolloutActionOutcome;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const EXAMPLES: &str = "\
Examples:
  # The lineage tree of the current namespace: Dataset -> TrainingJob -> ModelVersion -> InferenceService
  kubectl hone status

  # Only the branches through one object (any kind), as JSON
  kubectl hone status -n ml digits -o json

  # Every namespace
  kubectl hone status -A

  # Skip the remaining canary steps of InferenceService digits and promote now
  kubectl hone promote digits -n ml

  # Abort the canary of variant a and send all of its traffic back to the old version
  kubectl hone rollback digits --variant a -n ml

  # After a promotion: return variant a to the version it served before (status.history)
  kubectl hone rollback digits --variant a -n ml";

/// Hone's view of the model lifecycle, and manual control of rollouts.
#[derive(Debug, Parser)]
#[command(name = "kubectl hone", bin_name = "kubectl hone", version, after_help = EXAMPLES)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the lineage tree with each object's phase, why it is not ready, and key metrics.
    #[command(after_help = EXAMPLES)]
    Status(StatusArgs),
    /// Promote the canary in progress now, skipping the remaining steps.
    #[command(after_help = EXAMPLES)]
    Promote(ActionArgs),
    /// Abort the rollout in progress and return all traffic to the old
    /// version; with none in progress (after a promotion), return the variant
    /// to its previous good version in status.history. The version left is
    /// not rolled out again until the spec changes (for a track: until it
    /// picks a newer version).
    #[command(after_help = EXAMPLES)]
    Rollback(ActionArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Only the branches that contain an object of this name.
    name: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Tree)]
    output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// An indented tree.
    Tree,
    /// JSON, for programs.
    Json,
}

#[derive(Debug, Args)]
struct ActionArgs {
    /// The InferenceService.
    name: String,
    /// The variant: promote acts only if it is the one rolling out; rollback
    /// rolls it back (needed with no rollout in progress and several variants).
    #[arg(long)]
    variant: Option<String>,
    /// Return once the request is recorded, without waiting for the operator.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the operator, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration: write e.g. 60s or 2m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration: write e.g. 60s or 2m")),
    }
}

async fn client(context: Option<&str>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let config = match Kubeconfig::read() {
        Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await?,
        Err(_) if context.is_none() => Config::infer().await?,
        Err(e) => return Err(e).context("reading the kubeconfig"),
    };
    Client::try_from(config).context("building the Kubernetes client")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // One TLS provider for the process (see hone-operator's main): a
    // workspace build links rustls with both ring and aws-lc-rs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = client(cli.context.as_deref()).await?;
    let namespace = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    match cli.command {
        Command::Status(args) => {
            let scope = (!args.all_namespaces).then_some(namespace.as_str());
            let objects = cluster::objects(&client, scope).await?;
            let mut trees: Vec<_> = objects.iter().map(|(ns, o)| lineage::build(ns, o)).collect();
            if let Some(name) = &args.name {
                trees = trees.into_iter().filter_map(|t| lineage::only(t, name)).collect();
                if trees.is_empty() {
                    anyhow::bail!(
                        "no Dataset, TrainingJob, ModelVersion or InferenceService named {name} in namespace {namespace}"
                    );
                }
            }
            if trees.is_empty() {
                eprintln!("No Datasets, TrainingJobs, ModelVersions or InferenceServices in any namespace.");
            }
            let text = match args.output {
                Output::Tree => render::text(&trees),
                Output::Json => render::json(&trees),
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote(args) => act(&client, &namespace, action::Action::Promote, args).await,
        Command::Rollback(args) => act(&client, &namespace, action::Action::Rollback, args).await,
    }
}

async fn act(
    client: &Client,
    namespace: &str,
    what: action::Action,
    args: ActionArgs,
) -> anyhow::Result<ExitCode> {
    let wait = (!args.no_wait).then_some(args.timeout);
    let answer = cluster::request(client, namespace, &args.name, what, args.variant.as_deref(), wait).await?;
    let Some(answer) = answer else {
        println!("inferenceservice/{} annotated: {} requested", args.name, what.value());
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = match answer.outcome {
        RolloutActionOutcome::Promoted => "promoted",
        RolloutActionOutcome::RolledBack => "rolled back",
        RolloutActionOutcome::Ignored => "ignored",
    };
    println!("inferenceservice/{} {outcome}: {}", args.name, answer.message);
    Ok(if action::done(&answer) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
