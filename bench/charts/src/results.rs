//! The results JSON that `scripts/bench-peers` writes, read into plain structs.
//!
//! Parsing goes through `serde_json::Value` by hand rather than derived deserialisers so
//! that every error names the file, the place in it (`throughput[3]`) and the field.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

/// An error for the user: one line that says what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A median with the min–max range of the runs it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub date: String,
    pub kafka: String,
    pub cpus: u64,
    pub runs: u64,
    pub command: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    pub phase: String,
    pub records: u64,
    pub size: u64,
    pub acks: String,
    pub codec: String,
    pub client: String,
    /// records/s
    pub rate: Stat,
    /// CPU seconds per million records
    pub cpu_per_m: Stat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub client: String,
    /// The offered rate, records/s.
    pub rate: f64,
    /// The rate the client actually sent, records/s, when reported.
    pub sent_rate: Option<f64>,
    pub p50: Stat,
    pub p99: Stat,
    pub p999: Stat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub threads: u64,
    /// events/s
    pub rate: Stat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub meta: Meta,
    /// Empty when the section is absent.
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub scaling: Vec<Scaling>,
}

impl Results {
    /// Reads and parses `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Results, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error(format!("cannot read {}: {e}", path.display())))?;
        Results::parse(&text).map_err(|e| Error(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Results, Error> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| Error(format!("not valid JSON: {e}")))?;
        let root = Obj::new("the top level", &root)?;
        let meta = root.obj("meta")?;
        let meta = Meta {
            date: meta.str("date")?,
            kafka: meta.str("kafka")?,
            cpus: meta.uint("cpus")?,
            runs: meta.uint("runs")?,
            command: meta.opt_str("command")?,
        };
        let throughput = root.array("throughput", |e| {
            let phase = e.str("phase")?;
            if phase.is_empty()
                || !phase
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(e.err(format!(
                    "field `phase` is {phase:?}; expected a lowercase name such as \"produce\" or \"consume\""
                )));
            }
            Ok(Throughput {
                phase,
                records: e.uint("records")?,
                size: e.uint("size")?,
                acks: e.str("acks")?,
                codec: e.str("codec")?,
                client: e.str("client")?,
                rate: e.stat("rate", "rate_min", "rate_max")?,
                cpu_per_m: e.stat("cpu_per_m", "cpu_min", "cpu_max")?,
            })
        })?;
        let latency = root.array("latency", |e| {
            Ok(Latency {
                client: e.str("client")?,
                rate: e.num("rate")?,
                sent_rate: e.opt_num("sent_rate")?,
                p50: e.stat("p50_ms", "p50_min", "p50_max")?,
                p99: e.stat("p99_ms", "p99_min", "p99_max")?,
                p999: e.stat("p999_ms", "p999_min", "p999_max")?,
            })
        })?;
        let scaling = root.array("scaling", |e| {
            let threads = e.uint("threads")?;
            if threads == 0 {
                return Err(e.err("field `threads` must be at least 1".into()));
            }
            Ok(Scaling {
                threads,
                rate: e.stat("rate", "rate_min", "rate_max")?,
            })
        })?;
        check_unique(&throughput, "throughput", |t| {
            format!(
                "phase={} size={} acks={} codec={} client={}",
                t.phase, t.size, t.acks, t.codec, t.client
            )
        })?;
        check_unique(&latency, "latency", |l| {
            format!("client={} rate={}", l.client, l.rate)
        })?;
        check_unique(&scaling, "scaling", |s| format!("threads={}", s.threads))?;
        Ok(Results {
            meta,
            throughput,
            latency,
            scaling,
        })
    }
}

fn check_unique<T>(items: &[T], section: &str, key: impl Fn(&T) -> String) -> Result<(), Error> {
    let keys: Vec<String> = items.iter().map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        if let Some(j) = keys[..i].iter().position(|o| o == k) {
            return Err(Error(format!(
                "{section}[{i}] repeats {section}[{j}] ({k}); each must appear once"
            )));
        }
    }
    Ok(())
}

/// A JSON object and the path that leads to it, for error messages.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Obj<'a>, Error> {
        match v {
            Value::Object(map) => Ok(Obj {
                path: path.to_string(),
                map,
            }),
            other => Err(Error(format!(
                "{path}: expected an object, found {}",
                kind(other)
            ))),
        }
    }

    fn err(&self, msg: String) -> Error {
        Error(format!("{}: {msg}", self.path))
    }

    fn child(&self, field: &str) -> String {
        if self.path == "the top level" {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn get(&self, field: &str) -> Result<&'a Value, Error> {
        self.map
            .get(field)
            .ok_or_else(|| self.err(format!("missing field `{field}`")))
    }

    fn wrong(&self, field: &str, want: &str, v: &Value) -> Error {
        self.err(format!(
            "field `{field}` should be {want}, found {}",
            kind(v)
        ))
    }

    fn obj(&self, field: &str) -> Result<Obj<'a>, Error> {
        let v = self.get(field)?;
        match v {
            Value::Object(_) => Obj::new(&self.child(field), v),
            other => Err(self.wrong(field, "an object", other)),
        }
    }

    fn str(&self, field: &str) -> Result<String, Error> {
        match self.get(field)? {
            Value::String(s) => Ok(s.clone()),
            // acks may reasonably be written as a number: 1 means "1".
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.wrong(field, "a string", other)),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>, Error> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(field).map(Some),
        }
    }

    fn num(&self, field: &str) -> Result<f64, Error> {
        let v = self.get(field)?;
        match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
            Some(x) => Err(self.err(format!("field `{field}` is {x}; expected a number >= 0"))),
            None => Err(self.wrong(field, "a number", v)),
        }
    }

    fn opt_num(&self, field: &str) -> Result<Option<f64>, Error> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.num(field).map(Some),
        }
    }

    fn uint(&self, field: &str) -> Result<u64, Error> {
        let v = self.get(field)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(field, "a whole number >= 0", v))
    }

    /// A median and its range; checks min <= median <= max.
    fn stat(&self, median: &str, min: &str, max: &str) -> Result<Stat, Error> {
        let s = Stat {
            median: self.num(median)?,
            min: self.num(min)?,
            max: self.num(max)?,
        };
        if !(s.min <= s.median && s.median <= s.max) {
            return Err(self.err(format!(
                "expected `{min}` <= `{median}` <= `{max}`, found {} / {} / {}",
                s.min, s.median, s.max
            )));
        }
        Ok(s)
    }

    /// An optional array of objects: absent or null gives an empty list.
    fn array<T>(
        &self,
        field: &str,
        mut each: impl FnMut(&Obj<'a>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let items = match self.map.get(field) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong(field, "an array", other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| each(&Obj::new(&format!("{}[{i}]", self.child(field)), v)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../fixtures/sample.json");

    #[test]
    fn parses_the_fixture() {
        let r = Results::parse(FIXTURE).unwrap();
        assert_eq!(r.meta.kafka, "4.4.0");
        assert_eq!(r.meta.runs, 3);
        // 2 phases x 2 sizes x 2 acks x 2 codecs x 5 clients.
        assert_eq!(r.throughput.len(), 80);
        assert_eq!(r.latency.len(), 5);
        assert_eq!(
            r.scaling.iter().map(|s| s.threads).collect::<Vec<_>>(),
            [1, 2, 4, 8]
        );
        let first = &r.throughput[0];
        assert_eq!(
            (first.phase.as_str(), first.client.as_str()),
            ("produce", "kpipe")
        );
        assert!(first.rate.min <= first.rate.median && first.rate.median <= first.rate.max);
    }

    /// The fixture with one field of one entry removed.
    fn without(section: &str, index: usize, field: &str) -> String {
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        let entry = &mut v[section][index];
        entry.as_object_mut().unwrap().remove(field).unwrap();
        v.to_string()
    }

    #[test]
    fn a_missing_field_is_named_with_its_place() {
        let e = Results::parse(&without("throughput", 3, "rate_min")).unwrap_err();
        assert_eq!(e.0, "throughput[3]: missing field `rate_min`");
        let e = Results::parse(&without("latency", 1, "p999_max")).unwrap_err();
        assert_eq!(e.0, "latency[1]: missing field `p999_max`");
    }

    #[test]
    fn a_missing_meta_field_is_named() {
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        v["meta"].as_object_mut().unwrap().remove("kafka");
        let e = Results::parse(&v.to_string()).unwrap_err();
        assert_eq!(e.0, "meta: missing field `kafka`");
        v.as_object_mut().unwrap().remove("meta");
        let e = Results::parse(&v.to_string()).unwrap_err();
        assert_eq!(e.0, "the top level: missing field `meta`");
    }

    #[test]
    fn wrong_types_and_bad_json_are_reported() {
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        v["scaling"][2]["rate"] = Value::String("fast".into());
        let e = Results::parse(&v.to_string()).unwrap_err();
        assert_eq!(
            e.0,
            "scaling[2]: field `rate` should be a number, found a string"
        );
        let e = Results::parse("{\"meta\": ").unwrap_err();
        assert!(e.0.starts_with("not valid JSON: "), "{e}");
        assert!(e.0.contains("line 1"), "{e}");
    }

    #[test]
    fn absent_sections_are_empty() {
        let r = Results::parse(
            r#"{"meta": {"date": "2026-01-01", "kafka": "4.4.0", "cpus": 2, "runs": 1}}"#,
        )
        .unwrap();
        assert!(r.throughput.is_empty() && r.latency.is_empty() && r.scaling.is_empty());
        assert_eq!(r.meta.command, None);
    }

    #[test]
    fn load_names_the_file() {
        let e = Results::load(Path::new("/nonexistent/results.json")).unwrap_err();
        assert!(
            e.0.starts_with("cannot read /nonexistent/results.json: "),
            "{e}"
        );
    }
}
