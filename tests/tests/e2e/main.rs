//! End-to-end: pretrained weights → Burn → exported bundle → tract, and the bundle contract.
//! Needs the assets from `scripts/fetch-assets.sh` (CI fetches them first).
//!
//! One test binary, a module per topic (as ripgrep's integration tests); `util` holds what they
//! share, `kestrel_e2e` (tests/src) the fixtures the other test crates use too.

mod accuracy;
mod bad_input;
mod contract;
mod imagenet;
mod int8;
mod training;
mod util;
