//! The fuzz engine: seeds, structured mutations, a proptest runner bounded by cases or time,
//! a per-thread allocation meter, and the results line `scripts/fuzz` collects.
//!
//! Environment:
//! - `TRUSTGATE_FUZZ_CASES`: executions per target (default 1,000: seconds in a debug build);
//! - `TRUSTGATE_FUZZ_SECONDS`: run each target this long instead (batches of 2,000 cases);
//! - `TRUSTGATE_FUZZ_SEED`: the first batch's seed (printed by every run), to replay a failure;
//! - `TRUSTGATE_FUZZ_RESULTS`: a file to append one JSON line per target to (`scripts/fuzz`).

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation meter: how much one execution holds at its peak, on its own thread (the test
// harness runs targets on several threads at once).

struct Meter;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    // `try_with`: allocations during thread teardown are not metered.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the meter only counts.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result with the most bytes it held at once beyond what was live
/// when it started.
fn metered<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - start).max(0) as usize)
}

/// The memory one execution may hold: proportional to its input, plus a constant. Parsing
/// builds at most a tree of the input's values; anything beyond is unbounded growth.
fn memory_bound(input_len: usize) -> usize {
    64 * input_len + (4 << 20)
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// JSON fragments and hostile bytes the mutations insert: structure, the edges of 64-bit
/// numbers, escapes, invalid UTF-8, and the keys trustgate reads.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1.5",
    b"1e999",
    b"-1e-999",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"9007199254740993",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\u0000\"",
    b"\\u0000",
    b"\x00",
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80\xae",
    b"\r\n",
    b"\"id\":1,",
    b"\"id\":\"6533241145273614339\",",
    b"\"event_type_id\":1090519054,",
    b"\"connector_guid\":\"00000000-0000-0000-0000-000000000000\",",
    b"\"is_compromised\":true,",
    b"\"is_compromised\":false,",
    b"\"hostname\":\"x\",",
    b"\"data\":[",
    b"\"request_id\":\"r\",",
    b"\"trusted\":true,",
    b"\"trusted\":false,",
];

/// One structured change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Delete(Index, usize),
    Insert(Index, Index),
    /// Copies a chunk of another seed in.
    Splice(Index, Index, Index, usize),
    /// Repeats a `"key": value,` member in front of itself: a duplicate key in one object.
    DuplicateMember(Index),
    /// Replaces a value with one nested `depth` deep.
    Nest(Index, usize),
    /// Replaces a run of digits with a number past 64 bits.
    HugeNumber(Index, usize),
    /// Grows a string by `len` bytes.
    Oversize(Index, usize),
    /// Puts invalid UTF-8 inside a string.
    BadUtf8(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        // Mostly within ASCII: invalid UTF-8 is refused before any parsing, so inputs that are
        // mostly UTF-8 reach further; BadUtf8, the tokens and arbitrary bytes cover the rest.
        3 => (any::<Index>(), prop_oneof![6 => 0u8..7, 1 => Just(7u8)])
            .prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>()])
            .prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        2 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..256)
            .prop_map(|(a, s, b, n)| Mutation::Splice(a, s, b, n)),
        3 => any::<Index>().prop_map(Mutation::DuplicateMember),
        1 => (any::<Index>(), prop_oneof![1usize..48, 100usize..20_000]).prop_map(|(i, d)| Mutation::Nest(i, d)),
        2 => (any::<Index>(), 20usize..400).prop_map(|(i, n)| Mutation::HugeNumber(i, n)),
        1 => (any::<Index>(), prop_oneof![8 => 1usize..4096, 1 => 60_000usize..300_000])
            .prop_map(|(i, n)| Mutation::Oversize(i, n)),
        1 => any::<Index>().prop_map(Mutation::BadUtf8),
    ]
}

/// Positions in `data` where `pred` holds.
fn positions(data: &[u8], pred: impl Fn(&[u8], usize) -> bool) -> Vec<usize> {
    (0..data.len()).filter(|&i| pred(data, i)).collect()
}

/// The end of the JSON value starting at `at`, if one does.
fn value_end(data: &[u8], at: usize) -> Option<usize> {
    let mut stream =
        serde_json::Deserializer::from_slice(&data[at..]).into_iter::<serde::de::IgnoredAny>();
    stream.next()?.ok()?;
    Some(at + stream.byte_offset())
}

fn apply(mut data: Vec<u8>, m: &Mutation, seeds: &[Vec<u8>]) -> Vec<u8> {
    let at = |i: &Index, data: &Vec<u8>| i.index(data.len() + 1);
    match m {
        Mutation::FlipBit(i, bit) if !data.is_empty() => {
            let k = i.index(data.len());
            data[k] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !data.is_empty() => {
            let k = i.index(data.len());
            data[k] = *b;
        }
        Mutation::Truncate(i) => data.truncate(at(i, &data)),
        Mutation::Delete(i, n) => {
            let k = at(i, &data);
            let end = (k + n).min(data.len());
            data.drain(k..end);
        }
        Mutation::Insert(i, t) => {
            let k = at(i, &data);
            let token = TOKENS[t.index(TOKENS.len())];
            data.splice(k..k, token.iter().copied());
        }
        Mutation::Splice(i, s, from, n) => {
            let other = &seeds[s.index(seeds.len())];
            if !other.is_empty() {
                let a = from.index(other.len());
                let chunk = &other[a..(a + n).min(other.len())];
                let k = at(i, &data);
                data.splice(k..k, chunk.iter().copied());
            }
        }
        Mutation::DuplicateMember(i) => {
            // A member starts at a `"` that follows `{` or `,` (whitespace aside).
            let starts = positions(&data, |d, k| {
                d[k] == b'"'
                    && d[..k]
                        .iter()
                        .rev()
                        .find(|b| !b.is_ascii_whitespace())
                        .is_some_and(|b| matches!(b, b'{' | b','))
            });
            if !starts.is_empty() {
                let start = starts[i.index(starts.len())];
                let colon = value_end(&data, start).and_then(|key_end| {
                    data[key_end..]
                        .iter()
                        .position(|&b| b == b':')
                        .map(|p| key_end + p + 1)
                });
                if let Some(end) = colon.and_then(|c| value_end(&data, c)) {
                    let mut member = data[start..end].to_vec();
                    member.push(b',');
                    data.splice(start..start, member);
                }
            }
        }
        Mutation::Nest(i, depth) => {
            let colons = positions(&data, |d, k| d[k] == b':');
            if !colons.is_empty() {
                let c = colons[i.index(colons.len())] + 1;
                if let Some(end) = value_end(&data, c) {
                    let nested = [
                        "[".repeat(*depth).into_bytes(),
                        b"1".to_vec(),
                        "]".repeat(*depth).into_bytes(),
                    ]
                    .concat();
                    data.splice(c..end, nested);
                }
            }
        }
        Mutation::HugeNumber(i, digits) => {
            // Digit runs where a JSON number starts (most digits in SE records are in strings).
            let runs = positions(&data, |d, k| {
                d[k].is_ascii_digit()
                    && (k == 0 || matches!(d[k - 1], b':' | b',' | b'[' | b' ' | b'-'))
            });
            let k = if runs.is_empty() {
                at(i, &data)
            } else {
                runs[i.index(runs.len())]
            };
            let end = data[k..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(data.len(), |p| k + p);
            let huge = format!("1{}", "9".repeat(*digits)).into_bytes();
            data.splice(k..end, huge);
        }
        Mutation::Oversize(i, len) => {
            let quotes = positions(&data, |d, k| d[k] == b'"');
            let k = if quotes.is_empty() {
                at(i, &data)
            } else {
                quotes[i.index(quotes.len())] + 1
            };
            data.splice(k..k, std::iter::repeat_n(b'a', *len));
        }
        Mutation::BadUtf8(i) => {
            let quotes = positions(&data, |d, k| d[k] == b'"');
            let k = if quotes.is_empty() {
                at(i, &data)
            } else {
                quotes[i.index(quotes.len())] + 1
            };
            let bad: [&[u8]; 4] = [b"\xff", b"\xc0\xaf", b"\xed\xb0\x80", b"\xe2\x82"];
            data.splice(k..k, bad[k % 4].iter().copied());
        }
        _ => {}
    }
    data
}

/// Inputs for one target: mostly mutated seeds, some arbitrary bytes, some untouched seeds.
fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let pool = seeds.clone();
    prop_oneof![
        1 => select(seeds.clone()),
        12 => (select(seeds), prop::collection::vec(mutation(), 1..5)).prop_map(move |(seed, ms)| {
            ms.iter().fold(seed, |d, m| apply(d, m, &pool))
        }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => "[ -~]{0,256}".prop_map(String::into_bytes),
    ]
}

// ---------------------------------------------------------------------------------------------
// The runner.

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
    )
}

/// What one target's run did.
struct Outcome {
    executions: u64,
    /// How many executions ended each way (the property's label): shows which paths ran.
    outcomes: BTreeMap<&'static str, u64>,
    elapsed: Duration,
    largest_input: usize,
    peak_bytes: usize,
}

/// Runs `property` over inputs derived from `seeds` until the case count or the time budget is
/// spent. Any panic, any `Err` from the property and any execution holding more memory than
/// its bound fails the test with the (shrunk) input and the seed that replays it.
/// The property returns how the execution ended (a label such as `applied` or
/// `refused:duplicate_key`), or what it violated.
pub fn fuzz(
    target: &str,
    seeds: Vec<Vec<u8>>,
    property: impl Fn(&[u8]) -> Result<&'static str, String>,
) {
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let budget = env_u64("TRUSTGATE_FUZZ_SECONDS").map(Duration::from_secs);
    let cases = env_u64("TRUSTGATE_FUZZ_CASES").unwrap_or(1_000);
    let first_seed = env_u64("TRUSTGATE_FUZZ_SEED").unwrap_or_else(rand::random);
    let strategy = inputs(seeds);
    let started = Instant::now();
    let executions = Cell::new(0u64);
    let largest = Cell::new(0usize);
    let peak = Cell::new(0usize);
    let outcomes = RefCell::new(BTreeMap::new());
    let mut batch = 0u64;
    loop {
        let seed = first_seed.wrapping_add(batch);
        let batch_cases = match budget {
            Some(_) => 2_000,
            None => cases,
        };
        let config = Config {
            cases: u32::try_from(batch_cases).unwrap_or(u32::MAX),
            failure_persistence: None,
            max_shrink_iters: 2_000,
            ..Config::default()
        };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |input| {
            executions.set(executions.get() + 1);
            largest.set(largest.get().max(input.len()));
            let (verdict, held) = metered(|| property(&input));
            peak.set(peak.get().max(held));
            let label = verdict.map_err(TestCaseError::fail)?;
            *outcomes.borrow_mut().entry(label).or_insert(0) += 1;
            if held > memory_bound(input.len()) {
                return Err(TestCaseError::fail(format!(
                    "held {held} bytes for a {}-byte input (bound {})",
                    input.len(),
                    memory_bound(input.len())
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            let (reason, input) = match e {
                TestError::Fail(reason, input) => (reason.to_string(), input),
                TestError::Abort(reason) => panic!("{target}: aborted: {reason}"),
            };
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-{seed}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{target}: {reason}\n  input ({} bytes, saved to {}): {:?}\n  replay: TRUSTGATE_FUZZ_SEED={seed} TRUSTGATE_FUZZ_CASES={batch_cases}",
                input.len(),
                path.display(),
                String::from_utf8_lossy(&input[..input.len().min(2_000)]),
            );
        }
        batch += 1;
        match budget {
            Some(b) if started.elapsed() < b => continue,
            _ => break,
        }
    }
    report(
        target,
        first_seed,
        &Outcome {
            executions: executions.get(),
            outcomes: outcomes.into_inner(),
            elapsed: started.elapsed(),
            largest_input: largest.get(),
            peak_bytes: peak.get(),
        },
    );
}

fn report(target: &str, seed: u64, o: &Outcome) {
    let secs = o.elapsed.as_secs_f64();
    let outcomes: Vec<String> = o.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "fuzz {target}: {} executions in {secs:.1} s ({:.0}/s), 0 failures, largest input {} B, peak held {} B, seed {seed}\n  outcomes: {}",
        o.executions,
        o.executions as f64 / secs.max(1e-9),
        o.largest_input,
        o.peak_bytes,
        outcomes.join(", "),
    );
    let Ok(path) = std::env::var("TRUSTGATE_FUZZ_RESULTS") else {
        return;
    };
    let line = serde_json::json!({
        "suite": "fuzz",
        "test": target,
        "executions": o.executions,
        "seconds": (secs * 10.0).round() / 10.0,
        "failures": 0,
        "largest_input_bytes": o.largest_input,
        "peak_held_bytes": o.peak_bytes,
        "outcomes": o.outcomes,
        "seed": seed.to_string(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commit": std::env::var("TRUSTGATE_RELIABILITY_COMMIT").ok(),
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// The fixture files under `tests/fixtures/` and, when present, the shared Secure Endpoint
/// fixtures beside the repository (`../shared/fixtures/secure-endpoint/`), by name.
pub fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        root.join("tests/fixtures"),
        root.join("../shared/fixtures/secure-endpoint"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".json") || name.ends_with(".jsonl") {
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}
