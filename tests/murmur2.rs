//! Our murmur2 partitioner against the Java client's own, computed by the real
//! kafka-clients jar (through jshell, with the jars scripts/kafka fetched).

use std::fmt::Write as _;
use std::process::Command;

use kpipe::producer::{java_partition, murmur2};

const PARTITION_COUNTS: [usize; 5] = [1, 3, 6, 7, 100];

fn keys() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut keys: Vec<Vec<u8>> = (0..400)
        .map(|i| (0..(i % 41)).map(|_| next() as u8).collect())
        .collect();
    keys.extend((0..100).map(|i| format!("device-{i}").into_bytes()));
    keys
}

#[test]
fn murmur2_and_partitions_match_the_java_client() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cp = Command::new(format!("{root}/scripts/kafka"))
        .arg("classpath")
        .output()
        .expect("run scripts/kafka classpath");
    assert!(
        cp.status.success(),
        "scripts/kafka classpath failed: {}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let cp = String::from_utf8(cp.stdout).unwrap().trim().to_owned();

    let keys = keys();
    let mut script = String::from("import org.apache.kafka.common.utils.Utils;\n");
    script.push_str("String[] keys = {\n");
    for k in &keys {
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(script, "\"{hex}\",").unwrap();
    }
    script.push_str("};\n");
    script.push_str(&format!(
        "int[] counts = {{{}}};\n",
        PARTITION_COUNTS.map(|c| c.to_string()).join(",")
    ));
    script.push_str(
        "for (String h : keys) {\n\
           byte[] b = java.util.HexFormat.of().parseHex(h);\n\
           StringBuilder sb = new StringBuilder().append(Utils.murmur2(b));\n\
           for (int c : counts) sb.append(' ').append(Utils.toPositive(Utils.murmur2(b)) % c);\n\
           System.out.println(sb);\n\
         }\n/exit\n",
    );
    let path = std::env::temp_dir().join(format!("kpipe-murmur2-{}.jsh", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let out = Command::new("jshell")
        .args(["-q", "--class-path", &cp])
        .arg(&path)
        .output()
        .expect("jshell (part of JDK 17+) must be on PATH");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        keys.len(),
        "jshell said: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, line) in keys.iter().zip(lines) {
        let mut java = line.split_whitespace().map(|v| v.parse::<i64>().unwrap());
        assert_eq!(murmur2(k) as i64, java.next().unwrap(), "murmur2 of {k:?}");
        for c in PARTITION_COUNTS {
            assert_eq!(
                java_partition(k, c) as i64,
                java.next().unwrap(),
                "partition of {k:?} among {c}"
            );
        }
    }
}
