//! The install layout in `deploy/`: every example cloud-config is accepted
//! by the validator with no findings.

use integration::binary;
use std::path::Path;

#[test]
fn every_example_cloud_config_validates_with_no_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloud-config");
    let cloudinit = binary("coreos-cloudinit").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let out = std::process::Command::new(&cloudinit)
            .arg("--validate")
            .arg("--from-file")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(0), ""),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the example cloud-configs in {}",
        dir.display()
    );
}
