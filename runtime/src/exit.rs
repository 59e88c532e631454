//! Exit statuses scripts can rely on, shared by `kestrel` and `kestrel-train`.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything asked for was done.
    Success,
    /// The command ran but its result failed a check: some inputs could not be classified
    /// (`kestrel`), or an export's parity, a diverging run or the int8 accuracy gate
    /// (`kestrel-train`). Each failure was reported.
    CheckFailed,
    /// Nothing could be done: a usage error, an unreadable model or data folder.
    Fatal,
}

impl Status {
    pub const fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::CheckFailed => 1,
            Status::Fatal => 2,
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        ExitCode::from(status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers are a promise to scripts (and clap's own usage errors exit 2 as well).
    #[test]
    fn codes_are_stable() {
        assert_eq!(
            [Status::Success, Status::CheckFailed, Status::Fatal].map(Status::code),
            [0, 1, 2]
        );
    }
}
