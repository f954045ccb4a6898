//! The result of a fixture file, as `portico policy test` prints it: a line per case, the
//! differences and the policy's output under each failed one, the totals.

use std::fmt;
use std::time::Duration;

/// Lines of a policy's output shown under a failed case.
const MAX_OUTPUT_LINES: usize = 40;

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// What differed from the expectation (empty when it passed).
    pub mismatches: Vec<String>,
    /// What the policy logged or printed during the case.
    pub output: Vec<String>,
    /// How long the case took, instance creation included.
    pub time: Duration,
}

/// The outcome of a fixture file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The policy's name.
    pub policy: String,
    /// Its sha256.
    pub digest: String,
    /// Each case, in order.
    pub cases: Vec<CaseReport>,
    /// Linear memory of an instance after `init`.
    pub instance_memory: Option<usize>,
    /// How long each case's request took through both phases.
    pub request_times: Vec<Duration>,
}

impl Report {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.mismatches.is_empty()).count()
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failed() == 0
    }

    /// The median time of a case's request through both phases.
    pub fn median_request(&self) -> Option<Duration> {
        let mut times = self.request_times.clone();
        times.sort();
        times.get(times.len() / 2).copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy `{}` (sha256 {})", self.policy, &self.digest[..self.digest.len().min(12)])?;
        for case in &self.cases {
            if case.mismatches.is_empty() {
                writeln!(f, "  ✓ {}", case.name)?;
            } else {
                writeln!(f, "  ✗ {}", case.name)?;
                for mismatch in &case.mismatches {
                    writeln!(f, "      {mismatch}")?;
                }
                if !case.output.is_empty() {
                    writeln!(f, "      policy output:")?;
                    for line in case.output.iter().take(MAX_OUTPUT_LINES) {
                        writeln!(f, "        {line}")?;
                    }
                    if case.output.len() > MAX_OUTPUT_LINES {
                        writeln!(f, "        … {} more lines", case.output.len() - MAX_OUTPUT_LINES)?;
                    }
                }
            }
        }
        write!(f, "{} cases: {} passed, {} failed", self.cases.len(), self.cases.len() - self.failed(), self.failed())?;
        if let Some(memory) = self.instance_memory {
            write!(f, "; instance memory {:.1} MiB", memory as f64 / (1024.0 * 1024.0))?;
        }
        if let Some(median) = self.median_request() {
            write!(f, "; median request {:.0} µs", median.as_secs_f64() * 1e6)?;
        }
        writeln!(f)
    }
}
