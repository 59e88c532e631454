//! One file per command.

pub mod bench;
pub mod cameras;
pub mod classify;
pub mod info;
pub mod run;
