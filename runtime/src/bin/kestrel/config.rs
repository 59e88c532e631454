//! The config file: `--config FILE`, else `$KESTREL_CONFIG`, else `/etc/kestrel/kestrel.toml`
//! when it exists. Its keys are `run`'s flags (the same struct, deserialised), so the file and
//! the command line cannot drift apart; a flag overrides the file.

use std::path::{Path, PathBuf};

use crate::cli::RunArgs;

/// Where a service reads its settings (the .deb installs an example there).
pub const SYSTEM_CONFIG: &str = "/etc/kestrel/kestrel.toml";

/// A config file as read, with the path it came from.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    pub run: RunArgs,
}

/// The file to read, if any: the flag, else `$KESTREL_CONFIG` (empty = none), else the system
/// file when it exists. A file named by flag or variable must exist; the system one may not.
fn locate(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = flag {
        anyhow::ensure!(
            path.is_file(),
            "--config {}: no such file; write one with the keys of `kestrel run --help` (top_k = 5, \
             source = \"camera\", …)",
            path.display()
        );
        return Ok(Some(path.to_path_buf()));
    }
    if let Some(value) = std::env::var_os("KESTREL_CONFIG") {
        if value.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(value);
        anyhow::ensure!(
            path.is_file(),
            "KESTREL_CONFIG is {}, which is not a file; point it at a kestrel.toml, or set it empty to read none",
            path.display()
        );
        return Ok(Some(path));
    }
    let system = PathBuf::from(SYSTEM_CONFIG);
    Ok(system.is_file().then_some(system))
}

impl ConfigFile {
    pub fn load(flag: Option<&Path>) -> anyhow::Result<ConfigFile> {
        let Some(path) = locate(flag)? else {
            return Ok(ConfigFile::default());
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let run = parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}\nits keys are the flags of `kestrel run --help` with underscores, e.g. top_k = 5",
                path.display()
            )
        })?;
        // A relative path in the file means relative to the file, as in the trainer's config.
        let base = path.parent().unwrap_or(Path::new("."));
        let run = RunArgs {
            model: run.model.map(|m| base.join(m)),
            source: run.source.map(|s| relative_source(&s, base)),
            save_uncertain: run.save_uncertain.map(|d| base.join(d)),
            ..run
        };
        Ok(ConfigFile { path: Some(path), run })
    }
}

/// A folder, image or MJPEG file named in the file, joined to the file's folder; camera,
/// stdin, TCP and synthetic sources are not paths.
fn relative_source(source: &str, base: &Path) -> String {
    let (prefix, path) = source
        .split_once(':')
        .filter(|(p, _)| *p == "mjpeg")
        .unwrap_or(("", source));
    let is_path = !(source == "camera"
        || source.starts_with("camera:")
        || source.starts_with("synthetic")
        || path == "-"
        || path.starts_with("tcp://")
        || Path::new(path).is_absolute());
    if !is_path {
        return source.to_string();
    }
    let joined = base.join(path).to_string_lossy().into_owned();
    if prefix.is_empty() {
        joined
    } else {
        format!("{prefix}:{joined}")
    }
}

fn parse(text: &str) -> Result<RunArgs, toml::de::Error> {
    toml::from_str(text)
}

/// Flags over the file, field by field.
pub fn merge(flags: &RunArgs, file: &RunArgs) -> RunArgs {
    let mut out = file.clone();
    macro_rules! set {
        ($($field:ident),*) => { $( if flags.$field.is_some() { out.$field = flags.$field.clone(); } )* };
    }
    set!(
        model, source, top_k, threads, format, every, roi, threshold, smooth, on_change
    );
    set!(
        save_uncertain,
        below,
        save_interval,
        frames,
        resolution,
        fps,
        reconnect,
        progress
    );
    set!(max_pixels, http, http_token, mqtt, mqtt_queue);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_is_a_key_and_flags_win() {
        let file = parse(
            r#"
            source = "mjpeg:-"
            top_k = 5
            threads = 2
            format = "jsonl"
            on_change = true
            http = "0.0.0.0:8080"
            mqtt = "mqtt://broker/kestrel"
            mqtt_queue = 10
            "#,
        )
        .expect("valid config");
        let flags = RunArgs {
            top_k: Some(1),
            on_change: Some(false),
            ..RunArgs::default()
        };
        let merged = merge(&flags, &file);
        assert_eq!(merged.source.as_deref(), Some("mjpeg:-"));
        assert_eq!(merged.top_k, Some(1));
        assert_eq!(merged.on_change, Some(false));
        assert_eq!(merged.threads, Some(2));
        assert_eq!(merged.format, Some(crate::cli::Format::Jsonl));
        assert_eq!(merged.http.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(merged.mqtt_queue, Some(10));
    }

    #[test]
    fn paths_in_the_file_are_relative_to_it() {
        let base = Path::new("/etc/kestrel");
        assert_eq!(relative_source("frames", base), "/etc/kestrel/frames");
        assert_eq!(relative_source("mjpeg:pipe", base), "mjpeg:/etc/kestrel/pipe");
        for kept in [
            "camera",
            "camera:1",
            "mjpeg:-",
            "mjpeg:tcp://pi:8000",
            "synthetic:64x64",
            "/srv/frames",
        ] {
            assert_eq!(relative_source(kept, base), kept);
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = parse("top-k = 5\n").expect_err("dash is not a key").to_string();
        assert!(err.contains("top-k"), "{err}");
    }

    /// Every `run` flag must be settable from the file: a flag added without a key (or with a
    /// key of another name) fails here.
    #[test]
    fn the_file_knows_every_run_flag() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").expect("run command");
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help"].contains(&long) {
                continue;
            }
            let key = long.replace('-', "_");
            let value = match arg.get_id().as_str() {
                _ if arg.get_num_args().is_some_and(|n| n.min_values() == 0) && long != "http" => "true".to_string(),
                "format" => "\"jsonl\"".into(),
                "top_k" | "threads" | "every" | "smooth" | "frames" | "fps" | "max_pixels" | "mqtt_queue" => "2".into(),
                "threshold" | "below" | "save_interval" | "progress" => "0.5".into(),
                _ => "\"x\"".into(),
            };
            let text = format!("{key} = {value}\n");
            let parsed = parse(&text).unwrap_or_else(|e| panic!("flag --{long} has no config key `{key}`: {e}"));
            assert!(
                format!("{parsed:?}").contains(&format!("{key}: Some(")),
                "--{long}: key `{key}` read as nothing"
            );
        }
    }
}
