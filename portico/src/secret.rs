//! Secrets the CLI is given (gateway tokens, session tokens): read from a file or from the
//! environment, never taken on the command line, which every local user can read.

use std::path::Path;

/// The secret in `file` when one is given (trimmed), else in the environment variable `var`;
/// the error says where to put it, or what is wrong with the one found.
pub(crate) fn read(file: Option<&Path>, var: &str, what: &str) -> Result<String, String> {
    let secret = match file {
        Some(file) => std::fs::read_to_string(file).map_err(|e| format!("cannot read {what} from {}: {e}", file.display()))?,
        None => std::env::var(var).map_err(|_| format!("give {what} in {var} or in a file named by --token-file"))?,
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(secret.to_owned())
}
