//! The local stack: emulates, on one machine, the AWS services that surround emostream's
//! function binaries, so the binaries `sam deploy` ships run unmodified with no AWS account.
//! So far it serves the Lambda Runtime API and runs function processes against it.

pub mod function_process;
pub mod runtime_api;
pub mod websocket_event;

/// The bytes of a sample event from the repository's `events/` directory: the same files the
/// README offers to `sam local invoke -e` and `cargo lambda invoke --data-file`.
pub fn sample_event(name: &str) -> std::io::Result<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
