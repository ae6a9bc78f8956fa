//! The shipped packaging, checked without root: the systemd unit passes systemd's own
//! checker. (That its capabilities are enough is in service.rs, as root.)
use std::process::Command;

use watchdog_tests::*;

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    // systemd's own checker: unknown keys, bad values, a missing ExecStart binary.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/watchdog.service");
    let unit = std::fs::read_to_string(path).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/watchdog "),
        "{unit}"
    );
    let dir = TempDir::new("unit");
    let copy = dir.0.join("watchdog.service");
    let here = bin("watchdog").display().to_string();
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/watchdog ",
            &format!("ExecStart={here} "),
        ),
    )
    .unwrap();
    let (code, out, err) = run_for_output({
        let mut c = Command::new("systemd-analyze");
        c.arg("verify").arg(&copy);
        c
    });
    assert_eq!(
        (code, out.trim(), err.trim()),
        (0, "", ""),
        "systemd-analyze verify {}",
        copy.display()
    );
}
