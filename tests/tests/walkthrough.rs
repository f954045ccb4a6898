//! The README's five-minute walkthrough, taken from README.md and run by bash exactly as
//! written against a fresh all-in-one process on its default ports: the status codes it
//! prints must be the ones its comments promise, in order. README and test cannot drift.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_tests::{PorticoProcess, workspace_root};

/// The walkthrough's password, as its text says to start the all-in-one profile.
const ADMIN_PASSWORD: &str = "change-me-now-1";
/// How long the whole block may take (it compiles the policy chain once).
const LIMIT: Duration = Duration::from_secs(120);

/// The first `sh` block under the walkthrough's heading.
fn walkthrough_block(readme: &str) -> String {
    let section = readme.split_once("## A five-minute walkthrough").expect("README has the walkthrough section").1;
    let block = section.split_once("```sh\n").expect("the walkthrough has a sh block").1;
    block.split_once("\n```").expect("the block ends").0.to_owned()
}

/// The codes the comments promise (`# 401`, `# 200 ok`, `# 200 200 429`), in order.
fn promised(block: &str) -> Vec<u16> {
    let mut codes = Vec::new();
    for line in block.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((_, comment)) = line.rsplit_once("# ") else { continue };
        codes.extend(comment.split_whitespace().map_while(|word| word.parse::<u16>().ok().filter(|c| (100..600).contains(c))));
    }
    codes
}

/// The codes the block printed: `curl -i` status lines and `-w '%{http_code}\n'` lines
/// (which may follow a body printed without a newline).
fn printed(output: &str) -> Vec<u16> {
    let mut codes = Vec::new();
    for line in output.lines().map(|l| l.trim_end_matches('\r')) {
        let mut rest = line;
        let mut status_line = false;
        while let Some(at) = rest.find("HTTP/") {
            let after = &rest[at + 5..];
            let code = after.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
            codes.extend(code);
            status_line = true;
            rest = after;
        }
        if status_line {
            continue;
        }
        // Header lines (`content-length: 184`) and JSON have colons; a code line has none.
        let bytes = line.as_bytes();
        if !line.contains(':') && bytes.len() >= 3 && bytes[bytes.len() - 3..].iter().all(u8::is_ascii_digit) {
            let before = bytes.len().checked_sub(4).map(|i| bytes[i]);
            if before.is_none_or(|b| !b.is_ascii_digit()) {
                codes.extend(line[line.len() - 3..].parse::<u16>().ok());
            }
        }
    }
    codes
}

#[test]
fn the_readme_walkthrough_gives_the_codes_its_comments_promise() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = walkthrough_block(&readme);
    let expected = promised(&block);
    assert!(expected.len() >= 4, "the walkthrough promises too few codes to check: {expected:?}\n{block}");
    for tool in ["bash", "curl", "jq"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        assert!(found, "the walkthrough needs `{tool}` on the PATH");
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let process = PorticoProcess::spawn(dir, &["all-in-one", "--data-dir", &data], &[("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD)])
        .unwrap_or_else(|e| panic!("the all-in-one profile did not start on its default ports (8080, 9080, 9901 must be free): {e}"));

    let mut bash = Command::new("bash").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    bash.stdin.take().unwrap().write_all(block.as_bytes()).unwrap();
    let started = Instant::now();
    while bash.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            let _ = bash.kill();
            panic!("the walkthrough did not finish within {LIMIT:?}\n{}", process.logs().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = bash.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("walkthrough ran in {:?}", started.elapsed());
    assert_eq!(
        printed(&stdout),
        expected,
        "the walkthrough printed other codes than its comments promise\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn codes_are_read_from_status_lines_and_bare_lines() {
    let output = "{\"id\":\"a\"}HTTP/1.1 401 Unauthorized\r\ncontent-length: 184\r\n\r\n{\"status\":401}\nok200\n200\n429\n";
    assert_eq!(printed(output), [401, 200, 200, 429]);
    assert_eq!(
        promised("curl x  # 401\ncurl y # 200 ok\n# 500 in a comment line\nfor ...; done  # 200 200 429\n"),
        [401, 200, 200, 200, 429]
    );
}
