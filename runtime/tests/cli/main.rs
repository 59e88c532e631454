//! The `kestrel` binary, end to end: on the shipped ImageNet bundle and the sample photos
//! (`scripts/fetch-assets.sh` puts them in the asset cache), and against the real programs it
//! talks to (a browser, an MQTT broker).

mod browser;
mod classify;
mod config;
mod mqtt;
mod run;
mod util;
mod web;
