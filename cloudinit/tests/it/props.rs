//! Property tests: arbitrary input never panics the parser, the typed decoder or the validator.

use proptest::prelude::*;

fn yamlish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "#cloud-config\n",
        "\n",
        "  ",
        "- ",
        ": ",
        "coreos",
        "units",
        "name",
        "write_files",
        "users",
        "etcd2",
        "permissions",
        "0644",
        "yes",
        "off",
        "25:00",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "<<",
        "'",
        "\"",
        "|",
        ">",
        "\t",
        "\r\n",
        "content",
        "encoding",
        "b64",
        "command",
        "start",
        "#",
        "~",
        "!!str ",
        "?",
        ",",
        "update",
        "reboot-strategy",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = cloudinit::validate::validate(&data);
        let mut with_header = b"#cloud-config\n".to_vec();
        with_header.extend_from_slice(&data);
        let _ = cloudinit::validate::validate(&with_header);
        let _ = cloudinit::CloudConfig::parse(&String::from_utf8_lossy(&with_header));
    }

    #[test]
    fn yaml_like_input_never_panics(text in yamlish()) {
        let report = cloudinit::validate::validate(text.as_bytes());
        let with_header = format!("#cloud-config\n{text}");
        let report2 = cloudinit::validate::validate(with_header.as_bytes());
        let _ = cloudinit::CloudConfig::parse(&with_header);
        // Every entry points at a line of the input (line numbers are 1-based).
        let lines = with_header.lines().count().max(1);
        for e in report2.entries.iter().chain(report.entries.iter()) {
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e} in {with_header:?}");
        }
    }
}
