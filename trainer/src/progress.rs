//! Progress for people and for logs: bars with rates on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
pub struct Progress {
    interactive: bool,
}

impl Progress {
    /// Bars when stderr is a terminal.
    pub fn auto() -> Self {
        Progress {
            interactive: std::io::stderr().is_terminal(),
        }
    }

    /// No bars (tests, pipes); lines still print.
    pub fn plain() -> Self {
        Progress { interactive: false }
    }

    /// Whether bars are drawn (a terminal), so that live values are worth fetching.
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template("{prefix:>18} {bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar
    }

    /// A line that stays (epoch summaries), printed above any bar.
    pub fn line(&self, text: &str) {
        eprintln!("{text}");
    }
}
