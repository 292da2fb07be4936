//! The lineage tree as text for a person (box-drawing branches) or as JSON.

use serde_json::Value;

use crate::lineage::{Detail, NamespaceTree, Node};

/// The trees as an indented text tree. Numeric figures go on the object's
/// line (`val_accuracy=0.9722`), the others on lines of their own below it.
pub fn text(trees: &[NamespaceTree]) -> String {
    let mut out = String::new();
    for (i, tree) in trees.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("Namespace {}\n", tree.namespace));
        if tree.roots.is_empty() {
            out.push_str("  (no Datasets, TrainingJobs, ModelVersions or InferenceServices)\n");
        }
        for root in &tree.roots {
            node(&mut out, root, "", "");
        }
    }
    out
}

/// The trees as pretty JSON: `{"namespaces": [{"namespace", "roots": [node...]}]}`.
pub fn json(trees: &[NamespaceTree]) -> String {
    let value = serde_json::json!({ "namespaces": trees });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// Writes `n` after `lead` (its branch), its detail lines and children after `indent`.
fn node(out: &mut String, n: &Node, lead: &str, indent: &str) {
    let mut line = format!("{lead}{}/{}  {}", n.kind, n.name, n.phase);
    match (&n.reason, &n.message) {
        (Some(reason), Some(message)) if !message.is_empty() => {
            line.push_str(&format!(" ({reason}: {message})"));
        }
        (Some(reason), _) => line.push_str(&format!(" ({reason})")),
        _ => {}
    }
    let (numbers, texts): (Vec<&Detail>, Vec<&Detail>) = n.details.iter().partition(|d| d.value.is_number());
    for d in numbers {
        line.push_str(&format!("  {}={}", d.name, number(&d.value)));
    }
    out.push_str(line.trim_end());
    out.push('\n');
    let bar = if n.children.is_empty() { " " } else { "│" };
    for d in texts {
        let value = d.value.as_str().map_or_else(|| d.value.to_string(), str::to_owned);
        out.push_str(&format!("{indent}{bar}     {}: {value}\n", d.name));
    }
    for (i, child) in n.children.iter().enumerate() {
        let last = i + 1 == n.children.len();
        let (branch, next) = if last { ("└── ", "    ") } else { ("├── ", "│   ") };
        node(out, child, &format!("{indent}{branch}"), &format!("{indent}{next}"));
    }
}

/// Integers as they are; other numbers with at most 4 decimals.
fn number(value: &Value) -> String {
    if value.is_i64() || value.is_u64() {
        return value.to_string();
    }
    let Some(f) = value.as_f64() else { return value.to_string() };
    let text = format!("{f:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
