//! The config file: `--config`, `$KESTREL_CONFIG`; keys mirror `run`'s flags, a flag wins, a
//! relative path is relative to the file, and a bad file is named with the fix.

use super::util::*;

#[test]
fn a_config_file_drives_run_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    for (i, name) in ["chelsea.png", "chelsea.png", "coffee.png"].iter().enumerate() {
        std::fs::copy(sample(name), frames.join(format!("{i}.png"))).expect("copy");
    }
    let float = repo_root().join("models/efficientnet-lite0-imagenet.onnx");
    std::fs::copy(&float, dir.path().join("float.onnx")).expect("copy model");
    let conf = dir.path().join("kestrel.toml");
    std::fs::write(
        &conf,
        "# relative to this file\nmodel = \"float.onnx\"\nsource = \"frames\"\nformat = \"jsonl\"\ntop_k = 2\n",
    )
    .expect("write");
    let conf_arg = conf.to_string_lossy().into_owned();
    let out = kestrel(&["run", "--config", &conf_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 4, "three frames and the summary");
    assert_eq!(lines[0]["top"].as_array().map(Vec::len), Some(2), "top_k from the file");
    assert!(
        stderr(&out).contains("float.onnx"),
        "model from the file: {}",
        stderr(&out)
    );

    // Flags win; `--on-change=false`-style booleans can switch a file's `true` off.
    std::fs::write(
        &conf,
        "source = \"frames\"\nformat = \"jsonl\"\ntop_k = 2\non_change = true\n",
    )
    .expect("write");
    let out = kestrel(&["run", "--config", &conf_arg, "-k", "4", "--on-change=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 4, "every frame, not only changes");
    assert_eq!(lines[0]["top"].as_array().map(Vec::len), Some(4));
    let out = kestrel(&["run", "--config", &conf_arg]);
    assert_eq!(
        json_lines(&stdout(&out)).len(),
        3,
        "on_change = true: the cat, the coffee, the summary"
    );

    // $KESTREL_CONFIG names the file when --config does not; info says where the model is from.
    std::fs::write(&conf, "model = \"float.onnx\"\n").expect("write");
    let out = command()
        .args(["info"])
        .env("KESTREL_CONFIG", &conf)
        .output()
        .expect("run");
    let info = stdout(&out);
    assert!(
        info.contains("float.onnx (config") && info.contains("float32"),
        "{info}"
    );

    // A key that is no flag: exit 2, the file and the key named, and what the keys are.
    std::fs::write(&conf, "top-k = 5\n").expect("write");
    let out = kestrel(&["run", "--config", &conf_arg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&conf_arg) && err.contains("top-k") && err.contains("underscores"),
        "{err}"
    );
    let out = kestrel(&["info", "--config", "no/such.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such.toml"), "{}", stderr(&out));
}
