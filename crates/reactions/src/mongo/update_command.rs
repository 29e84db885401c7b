//! The raw unordered `update` command, sent when one round trip must carry many conditional
//! upserts. The driver hands such a command's reply back as it came, so this module does what
//! the driver does for its own write helpers: it sends the client's write concern (majority
//! unless the URI says otherwise) and reads the reply, so that a `writeConcernError` (the write
//! is applied on the primary but not confirmed by a majority, and may be rolled back) and any
//! write error other than a lost insert race fail the call instead of passing for success.

use super::{StoreError, server};
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

/// What an unordered `update` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct UpdateReply {
    /// By index, the statements that hit a duplicate key (an upsert whose condition failed on
    /// an existing document, or that lost an insert race: the caller decides).
    pub duplicates: Vec<usize>,
    /// Documents the statements matched (the reply's `n`).
    pub matched: u64,
}

/// Sends `statements` to `collection` as one unordered `update` at the client's write concern.
/// `what` names the statements in errors.
pub(super) async fn unordered_update(
    database: &Database,
    collection: &str,
    statements: Vec<Document>,
    what: &str,
) -> Result<UpdateReply, StoreError> {
    let count = statements.len();
    let mut command = doc! {
        "update": collection,
        "updates": statements,
        "ordered": false,
    };
    if let Some(concern) = database.write_concern() {
        let concern = mongodb::bson::to_document(concern)
            .map_err(|e| StoreError::Config(format!("write concern: {e}")))?;
        command.insert("writeConcern", concern);
    }
    let reply = database
        .run_command(command)
        .await
        .map_err(server("update"))?;
    Ok(UpdateReply {
        duplicates: duplicate_key_statements(&reply, count, what)?,
        matched: matched(&reply, what)?,
    })
}

/// The documents an `update` reply says its statements matched (`n`).
fn matched(reply: &Document, what: &str) -> Result<u64, StoreError> {
    let n = match reply.get("n") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
        _ => -1,
    };
    u64::try_from(n).map_err(|_| StoreError::Malformed(format!("{what}: reply without a count")))
}

/// Reads an unordered `update` reply of `count` statements: the indexes of the statements that
/// hit a duplicate key (code 11000). A `writeConcernError` or any other write error is an error,
/// named with `what`.
fn duplicate_key_statements(
    reply: &Document,
    count: usize,
    what: &str,
) -> Result<Vec<usize>, StoreError> {
    let mut duplicates = Vec::new();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for error in errors {
            let error = error
                .as_document()
                .ok_or_else(|| StoreError::Malformed(format!("{what}: writeErrors entry")))?;
            let index = error
                .get_i32("index")
                .ok()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < count)
                .ok_or_else(|| {
                    StoreError::Malformed(format!(
                        "{what}: writeErrors entry without a valid index"
                    ))
                })?;
            match error.get_i32("code").unwrap_or_default() {
                11000 => duplicates.push(index),
                code => {
                    return Err(StoreError::Write(format!(
                        "{what} {index} failed (code {code}): {}",
                        error.get_str("errmsg").unwrap_or("no message")
                    )));
                }
            }
        }
    }
    if let Some(concern_error) = reply.get("writeConcernError") {
        return Err(not_durable(what, concern_error));
    }
    Ok(duplicates)
}

fn not_durable(what: &str, concern_error: &Bson) -> StoreError {
    let (code, message) = match concern_error.as_document() {
        Some(error) => (
            error.get_i32("code").unwrap_or_default(),
            error.get_str("errmsg").unwrap_or("no message").to_owned(),
        ),
        None => (0, concern_error.to_string()),
    };
    StoreError::NotDurable {
        operation: what.to_owned(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(extra: Document) -> Document {
        let mut reply = doc! { "n": 2, "nModified": 1, "ok": 1.0 };
        reply.extend(extra);
        reply
    }

    #[test]
    fn the_matched_count_is_read_whatever_its_number_type() {
        assert_eq!(matched(&doc! { "n": 3 }, "s").unwrap(), 3);
        assert_eq!(matched(&doc! { "n": 4_i64 }, "s").unwrap(), 4);
        assert_eq!(matched(&doc! { "n": 5.0 }, "s").unwrap(), 5);
        assert!(matches!(
            matched(&doc! { "ok": 1.0 }, "s"),
            Err(StoreError::Malformed(_))
        ));
        assert!(matches!(
            matched(&doc! { "n": -1 }, "s"),
            Err(StoreError::Malformed(_))
        ));
    }

    #[test]
    fn a_clean_reply_has_no_duplicates() {
        assert_eq!(
            duplicate_key_statements(&reply(doc! {}), 2, "s").unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn duplicate_keys_are_returned_by_index() {
        let reply = reply(doc! { "writeErrors": [
            { "index": 1, "code": 11000, "errmsg": "E11000 duplicate key" },
            { "index": 0, "code": 11000, "errmsg": "E11000 duplicate key" },
        ] });
        assert_eq!(duplicate_key_statements(&reply, 2, "s").unwrap(), [1, 0]);
    }

    #[test]
    fn a_write_concern_error_fails_even_with_ok_1() {
        let reply = reply(doc! { "writeConcernError": {
            "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out",
        } });
        let error = duplicate_key_statements(&reply, 2, "update statement").unwrap_err();
        assert!(
            matches!(&error, StoreError::NotDurable { code: 64, .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("replication timed out"),
            "{error}"
        );
    }

    #[test]
    fn a_write_concern_error_beside_duplicates_still_fails() {
        let reply = reply(doc! {
            "writeErrors": [{ "index": 0, "code": 11000, "errmsg": "E11000" }],
            "writeConcernError": { "code": 100, "errmsg": "Not enough data-bearing nodes" },
        });
        assert!(matches!(
            duplicate_key_statements(&reply, 2, "s"),
            Err(StoreError::NotDurable { code: 100, .. })
        ));
    }

    #[test]
    fn other_write_errors_and_bad_indexes_fail() {
        let failed = reply(doc! { "writeErrors": [
            { "index": 0, "code": 11000, "errmsg": "E11000" },
            { "index": 1, "code": 2, "errmsg": "bad $inc" },
        ] });
        let error = duplicate_key_statements(&failed, 2, "tally").unwrap_err();
        assert!(
            matches!(&error, StoreError::Write(m) if m.contains("bad $inc")),
            "{error:?}"
        );
        let out_of_range = reply(doc! { "writeErrors": [{ "index": 2, "code": 11000 }] });
        assert!(matches!(
            duplicate_key_statements(&out_of_range, 2, "s"),
            Err(StoreError::Malformed(_))
        ));
        let without_index = reply(doc! { "writeErrors": [{ "code": 11000 }] });
        assert!(matches!(
            duplicate_key_statements(&without_index, 2, "s"),
            Err(StoreError::Malformed(_))
        ));
    }
}
