//! Reading a delivery's JSON payload into a [`Trigger`]: GitHub's `push` and `pull_request`
//! events, and the generic endpoint's top-level `repository`, `commit` and `ref` strings.
//! Refusals name the field (`repository.full_name`, `commit`…).

use kiln_queue::ValidationError;
use serde_json::Value;

use crate::Trigger;

/// What a GitHub delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubDelivery {
    /// A job for this trigger.
    Trigger(Trigger),
    /// Nothing to do, and why (a deleted ref, a pull request closed…).
    Ignored(String),
}

fn text_at<'a>(body: &'a Value, path: &[&str]) -> Result<&'a str, ValidationError> {
    let mut v = body;
    for p in path {
        v = v.get(p).unwrap_or(&Value::Null);
    }
    v.as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ValidationError::new(path.join("."), "missing or not a string"))
}

/// The trigger of GitHub event `event` (`push` or `pull_request`) with this payload.
pub fn github(event: String, delivery: String, payload: &Value) -> Result<GithubDelivery, ValidationError> {
    let repository = text_at(payload, &["repository", "full_name"])?.to_owned();
    let (commit, git_ref) = match event.as_str() {
        "push" => {
            let after = text_at(payload, &["after"])?;
            if payload.get("deleted").and_then(Value::as_bool) == Some(true)
                || after.bytes().all(|b| b == b'0')
            {
                return Ok(GithubDelivery::Ignored("a deleted ref".into()));
            }
            (after.to_owned(), text_at(payload, &["ref"])?.to_owned())
        }
        _ => {
            let action = text_at(payload, &["action"])?;
            if !matches!(action, "opened" | "synchronize" | "reopened") {
                return Ok(GithubDelivery::Ignored(format!("pull_request action {action:?}")));
            }
            (
                text_at(payload, &["pull_request", "head", "sha"])?.to_owned(),
                text_at(payload, &["pull_request", "head", "ref"])?.to_owned(),
            )
        }
    };
    Ok(GithubDelivery::Trigger(Trigger {
        repository,
        commit,
        git_ref,
        event,
        delivery,
    }))
}

/// The trigger of a generic delivery: the payload's top-level `repository`, `commit` and `ref`
/// strings (absent or null read as empty).
pub fn generic(event: String, delivery: String, payload: &Value) -> Result<Trigger, ValidationError> {
    let text = |k: &str| -> Result<String, ValidationError> {
        match payload.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ValidationError::new(k, "must be a string")),
        }
    };
    Ok(Trigger {
        repository: text("repository")?,
        commit: text("commit")?,
        git_ref: text("ref")?,
        event,
        delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn github_pushes_and_pull_requests_become_triggers() {
        let push = json!({"repository": {"full_name": "o/r"}, "after": "abc", "ref": "refs/heads/main"});
        let GithubDelivery::Trigger(t) = github("push".into(), "d1".into(), &push).unwrap() else {
            panic!("a push is a trigger")
        };
        assert_eq!(
            (t.repository.as_str(), t.commit.as_str(), t.git_ref.as_str()),
            ("o/r", "abc", "refs/heads/main")
        );
        let deleted = json!({"repository": {"full_name": "o/r"}, "after": "0000", "ref": "x"});
        assert!(matches!(
            github("push".into(), "d".into(), &deleted),
            Ok(GithubDelivery::Ignored(_))
        ));
        let closed = json!({"repository": {"full_name": "o/r"}, "action": "closed"});
        assert!(matches!(
            github("pull_request".into(), "d".into(), &closed),
            Ok(GithubDelivery::Ignored(_))
        ));
        let bad = json!({"repository": {"full_name": 3}});
        assert_eq!(
            github("push".into(), "d".into(), &bad).unwrap_err().field,
            "repository.full_name"
        );
    }

    #[test]
    fn generic_fields_must_be_strings() {
        let t = generic("e".into(), "d".into(), &json!({"commit": "abc"})).unwrap();
        assert_eq!((t.commit.as_str(), t.repository.as_str()), ("abc", ""));
        assert_eq!(
            generic("e".into(), "d".into(), &json!({"ref": 1}))
                .unwrap_err()
                .field,
            "ref"
        );
    }
}
