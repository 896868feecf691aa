//! End to end with the real `portico` binary: the commands that talk to a running gateway.
//! `status` prints what `GET /status` says (as a table, JSON and YAML); `tail` prints an event
//! posted while it runs, filtered; `send` delivers in each of its forms (JSON, a file, attribute
//! flags) and with the ingest token; `dead-letters list` shows what a watcher refused and
//! `redrive` delivers it once the watcher takes it, removing it from the dead-letter file;
//! `completions` prints a script; a port where no gateway listens gives a clear error.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Behaviour, GatewayFileBuilder, Portico, Sink, eventually, portico_bin};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

/// `portico ARGS…` with a clean environment and `envs`: (exit code, stdout, stderr).
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = command(args, envs);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn portico");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("portico {args:?} did not end within 60s"))
        .expect("portico's output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!(
        "[portico {args:?}] exit {:?}\n{stdout}{stderr}",
        out.status.code()
    );
    (out.status.code(), stdout, stderr)
}

/// `portico ARGS…` without the variables a test's caller may have set.
fn command(args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(portico_bin());
    cmd.args(args)
        .env_remove("PORTICO_URL")
        .env_remove("PORTICO_INGEST_TOKEN_FILE")
        .env_remove("TRANSFORMER_PORT")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// `portico ARGS… --url <the gateway>`, which must succeed: its stdout.
async fn cli_ok(portico: &Portico, args: &[&str]) -> String {
    let url = portico.url("");
    let mut all = args.to_vec();
    all.extend(["--url", url.as_str()]);
    let (code, stdout, stderr) = cli(&all, &[]).await;
    assert_eq!(code, Some(0), "portico {args:?} failed: {stderr}");
    stdout
}

fn independent(name: &str, sink: &Sink) -> GatewayFileBuilder {
    GatewayFileBuilder::new(name, "independent-example").watchers(&[sink.url()])
}

/// The events the sink took whose `id` is `id`.
fn with_id(sink: &Sink, id: &str) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["id"] == id)
        .collect()
}

async fn wait_for_id(sink: &Sink, id: &str) -> Value {
    eventually(WAIT, || with_id(sink, id).into_iter().next())
        .await
        .unwrap_or_else(|| panic!("event {id} did not reach the watcher: {:#?}", sink.events()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_what_the_gateway_says_as_a_table_json_and_yaml() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = GatewayFileBuilder::new("cal", "calendar")
        .watchers(&[sink.url()])
        .config("hourly", "interval: 1h")
        .config("broken", "interval: nonsense")
        .write();
    let portico = Portico::run(&file).await;
    portico.wait_for_phase("hourly", "Running", WAIT).await;
    let broken = portico.wait_for_phase("broken", "Error", WAIT).await;

    // JSON and YAML: what /status answers (read before and after: when nothing changed
    // meanwhile, the command printed exactly that).
    for format in ["json", "yaml"] {
        let mut compared = false;
        for _ in 0..5 {
            let before = portico.status().await;
            let printed = cli_ok(&portico, &["status", "-o", format]).await;
            let printed: Value = if format == "json" {
                serde_json::from_str(&printed).expect("status -o json prints JSON")
            } else {
                serde_saphyr::from_str(&printed).expect("status -o yaml prints YAML")
            };
            if before == portico.status().await {
                assert_eq!(printed, before, "{format}");
                compared = true;
                break;
            }
        }
        assert!(compared, "/status kept changing");
    }

    // The table: the gateway, its watcher, its outbox, then a row per node.
    let table = cli_ok(&portico, &["status"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("Gateway cal in namespace ") && lines[0].contains("type calendar"),
        "{table}"
    );
    assert!(
        table.contains(&format!("Watchers: url:{}", sink.url())),
        "{table}"
    );
    assert!(table.contains("Outbox: "), "{table}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("no header row: {table}"));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        columns,
        ["NAME", "PHASE", "RESTARTS", "AGE", "UPDATED", "MESSAGE"]
    );
    let row = |name: &str| -> Vec<String> {
        lines[header + 1..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("hourly")[1..3], ["Running", "0"]);
    let broken_row = row("broken");
    assert_eq!(broken_row[1..3], ["Error", "0"]);
    let message = broken["message"].as_str().unwrap();
    assert!(!message.is_empty());
    assert!(
        broken_row[5..].join(" ").starts_with(
            &message
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "{table}"
    );
    assert_eq!(lines.len(), header + 3, "one row per node: {table}");
    portico.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delivers_json_a_file_a_batch_the_raw_form_and_attribute_flags() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (dir, file) = independent("snd", &sink).write();
    let portico = Portico::run(&file).await;

    // --json: one structured CloudEvent.
    let out = cli_ok(
        &portico,
        &[
            "send",
            "--json",
            r#"{"specversion": "1.0", "id": "json-1", "source": "/cli/json", "type": "com.example.json",
                "datacontenttype": "application/json", "data": {"n": 1}, "colour": "blue"}"#,
        ],
    )
    .await;
    assert!(
        out.contains("accepted: id json-1, type com.example.json, source /cli/json"),
        "{out}"
    );
    let e = wait_for_id(&sink, "json-1").await;
    assert_eq!(e["source"], "/cli/json");
    assert_eq!(e["type"], "com.example.json");
    assert_eq!(e["data"], json!({"n": 1}));
    assert_eq!(e["colour"], "blue");

    // --file: a batch of two.
    let batch = dir.path().join("batch.json");
    std::fs::write(
        &batch,
        r#"[{"specversion": "1.0", "id": "file-1", "source": "/cli/file", "type": "com.example.file"},
            {"specversion": "1.0", "id": "file-2", "source": "/cli/file", "type": "com.example.file",
             "datacontenttype": "text/plain", "data": "two"}]"#,
    )
    .unwrap();
    let out = cli_ok(&portico, &["send", "--file", batch.to_str().unwrap()]).await;
    assert!(out.contains("accepted 2 events"), "{out}");
    assert!(
        out.contains("id file-1") && out.contains("id file-2"),
        "{out}"
    );
    wait_for_id(&sink, "file-1").await;
    assert_eq!(wait_for_id(&sink, "file-2").await["data"], "two");

    // --file: one event.
    let single = dir.path().join("event.json");
    std::fs::write(
        &single,
        r#"{"specversion": "1.0", "id": "file-3", "source": "/cli/file", "type": "com.example.file", "subject": "one"}"#,
    )
    .unwrap();
    cli_ok(&portico, &["send", "--file", single.to_str().unwrap()]).await;
    assert_eq!(wait_for_id(&sink, "file-3").await["subject"], "one");

    // The raw form: the gateway makes the CloudEvent.
    let out = cli_ok(
        &portico,
        &[
            "send",
            "--json",
            r#"{"src": "orders", "payload": "eyJvcmRlciI6IDQyfQ==", "contentType": "application/json"}"#,
        ],
    )
    .await;
    assert!(out.contains("accepted: a raw event of src orders"), "{out}");
    let raw = eventually(WAIT, || {
        sink.events().into_iter().find(|e| e["subject"] == "orders")
    })
    .await
    .expect("the raw event at the watcher");
    assert_eq!(raw["source"], "snd/orders");
    assert_eq!(raw["data"], json!({"order": 42}));

    // Attribute flags.
    let out = cli_ok(
        &portico,
        &[
            "send",
            "--type",
            "com.example.flags",
            "--source",
            "/cli/flags",
            "--subject",
            "flagged",
            "--id",
            "flags-1",
            "--data",
            r#"{"k": [1, 2]}"#,
            "--ext",
            "team=payments",
            "--ext",
            "tier=gold",
        ],
    )
    .await;
    assert!(
        out.contains(
            "accepted: id flags-1, type com.example.flags, source /cli/flags, subject flagged"
        ),
        "{out}"
    );
    let e = wait_for_id(&sink, "flags-1").await;
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["subject"], "flagged");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"], json!({"k": [1, 2]}));
    assert_eq!(e["team"], "payments");
    assert_eq!(e["tier"], "gold");
    assert!(e["time"].is_string(), "a time by default: {e}");

    // Flags with text data and no id: a fresh UUID, text/plain.
    let out = cli_ok(
        &portico,
        &[
            "send",
            "--type",
            "com.example.text",
            "--source",
            "/cli/text",
            "--data",
            "hello there",
        ],
    )
    .await;
    let id = out
        .split("accepted: id ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let e = wait_for_id(&sink, &id).await;
    assert_eq!(e["datacontenttype"], "text/plain");
    assert_eq!(e["data"], "hello there");

    // What the gateway refuses is said with its reason, and exits non-zero.
    let url = portico.url("");
    let (code, _, stderr) = cli(
        &[
            "send",
            "--url",
            &url,
            "--json",
            r#"{"specversion": "1.0", "id": "", "source": "/x", "type": "t"}"#,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the event was not accepted: the gateway answered 400"),
        "{stderr}"
    );
    // A bad event made from flags is refused before it is sent.
    let (code, _, stderr) = cli(
        &[
            "send", "--url", &url, "--type", "t", "--source", "/s", "--ext", "Bad=1",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("Bad"), "{stderr}");
    portico.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_redrive_need_the_token_of_a_gateway_that_has_one() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (dir, file) = independent("tok", &sink).write();
    let token = dir.path().join("ingest-token");
    let portico = Portico::start(
        &[
            "run",
            file.to_str().unwrap(),
            "--ingest-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let url = portico.url("");
    let event = r#"{"specversion": "1.0", "id": "tok-1", "source": "/cli", "type": "t"}"#;
    let (code, _, stderr) = cli(&["send", "--url", &url, "--json", event], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("ingest token (401") && stderr.contains("--token-file"),
        "{stderr}"
    );
    // A wrong token is named.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let (code, _, stderr) = cli(
        &[
            "send",
            "--url",
            &url,
            "--json",
            event,
            "--token-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("refused the ingest token in"), "{stderr}");
    // The flag, and the variable `portico run` reads too.
    let (code, _, stderr) = cli(
        &[
            "send",
            "--url",
            &url,
            "--json",
            event,
            "--token-file",
            token.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let event2 = event.replace("tok-1", "tok-2");
    let (code, _, stderr) = cli(
        &["send", "--url", &url, "--json", &event2],
        &[("PORTICO_INGEST_TOKEN_FILE", token.to_str().unwrap())],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    wait_for_id(&sink, "tok-1").await;
    wait_for_id(&sink, "tok-2").await;
    // A redrive changes something too: it needs the token; listing does not.
    let (code, _, stderr) = cli(&["dead-letters", "redrive", "--all", "--url", &url], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "the dead letters were not redriven: the gateway wants its ingest token (401"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli(
        &[
            "dead-letters",
            "redrive",
            "--all",
            "--url",
            &url,
            "--token-file",
            token.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("No dead letters to redrive"), "{stdout}");
    let (code, _, stderr) = cli(&["dead-letters", "list", "--url", &url], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    portico.kill().await;
}

/// Lines a child wrote.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A running `portico tail …`.
struct Tail {
    child: tokio::process::Child,
    stdout: Output,
    stderr: Output,
}

impl Tail {
    fn start(args: &[&str]) -> Tail {
        let mut cmd = command(args, &[]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn portico tail");
        let stdout = Output::default();
        let stderr = Output::default();
        let pipes: [(Box<dyn tokio::io::AsyncRead + Unpin + Send>, Output); 2] = [
            (Box::new(child.stdout.take().unwrap()), stdout.clone()),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ];
        for (pipe, lines) in pipes {
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(l)) = reader.next_line().await {
                    eprintln!("[tail] {l}");
                    lines.0.lock().unwrap().push(l);
                }
            });
        }
        Tail {
            child,
            stdout,
            stderr,
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(Ok(s)) => s.code(),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_events_posted_while_it_runs_filtered() {
    let (_dir, file) = GatewayFileBuilder::new("tl", "independent-example").write();
    let portico = Portico::run(&file).await;
    let url = portico.url("");
    let mut json_tail = Tail::start(&[
        "tail", "--url", &url, "--filter", "wanted", "-o", "json", "--count", "2",
    ]);
    let mut text_tail = Tail::start(&["tail", "--url", &url, "--count", "1"]);
    // Post until both tails have printed (each is connected once it prints): an event the
    // filter drops, then one it keeps, every round.
    let (json_out, text_out) = (json_tail.stdout.clone(), text_tail.stdout.clone());
    let posted = eventually(Duration::from_secs(30), || {
        (json_out.all().len() >= 2 && !text_out.all().is_empty()).then_some(())
    });
    let poster = async {
        let mut round = 0;
        loop {
            round += 1;
            for (id, subject) in [
                (format!("other-{round}"), "unrelated"),
                (format!("wanted-{round}"), "wanted"),
            ] {
                let body = json!({"specversion": "1.0", "id": id, "source": "/tail",
                    "type": "com.example.tail", "subject": subject});
                let r = portico
                    .http
                    .post(portico.url("/"))
                    .header("content-type", "application/cloudevents+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("POST /");
                assert_eq!(r.status(), 200);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        done = posted => done.expect("both tails print the posted events"),
        _ = poster => unreachable!(),
    }
    assert_eq!(
        json_tail.exit_code().await,
        Some(0),
        "--count 2 ends the tail"
    );
    assert_eq!(
        text_tail.exit_code().await,
        Some(0),
        "--count 1 ends the tail"
    );
    let json_lines = json_tail.stdout.all();
    assert_eq!(json_lines.len(), 2, "{json_lines:?}");
    for line in &json_lines {
        let e: Value = serde_json::from_str(line).expect("one CloudEvent in JSON a line");
        assert_eq!(
            e["subject"], "wanted",
            "the filter keeps only these: {line}"
        );
        assert_eq!(e["type"], "com.example.tail");
        assert!(e["id"].as_str().unwrap().starts_with("wanted-"));
    }
    let text = text_tail.stdout.all();
    assert_eq!(text.len(), 1);
    let fields: Vec<&str> = text[0].split_whitespace().collect();
    assert_eq!(fields.len(), 5, "time, source, subject, type, id: {text:?}");
    assert_eq!(fields[1], "/tail");
    assert_eq!(fields[3], "com.example.tail");
    let said = json_tail.stderr.all();
    assert!(
        said.iter()
            .any(|l| l.starts_with("following the events of http://") && l.contains("`wanted`")),
        "{said:?}"
    );
    portico.kill().await;
}

fn dead_letter_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a CloudEvent a line")["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_once_the_watcher_takes_them() {
    // The watcher refuses the first three events (400: not retried), then takes everything.
    let sink = Sink::start(Behaviour::Script(vec![400, 400, 400])).await;
    let dead_dir = tempfile::tempdir().unwrap();
    let dead = dead_dir.path().join("dead.jsonl");
    let (_dir, file) = independent("dl", &sink)
        .spec_lines(&format!(
            "  delivery:\n    retry: {{maxAttempts: 2, initialBackoff: 5ms, maxBackoff: 20ms}}\n    deadLetter: {{file: \"{}\"}}\n",
            dead.display()
        ))
        .write();
    let portico = Portico::run(&file).await;
    for i in 1..=3 {
        let out = cli_ok(
            &portico,
            &[
                "send",
                "--type",
                "com.example.dl",
                "--source",
                "/dl",
                "--id",
                &format!("dl-{i}"),
            ],
        )
        .await;
        assert!(out.contains(&format!("id dl-{i}")));
    }
    let ids = eventually(WAIT, || {
        let ids = dead_letter_ids(&dead);
        (ids.len() >= 3).then_some(ids)
    })
    .await
    .expect("three dead letters in the file");
    assert_eq!(ids.len(), 3);
    let watcher = format!("url:{}", sink.url());

    // list: a row per dead letter, with its watcher and reason.
    let table = cli_ok(&portico, &["dead-letters", "list"]).await;
    assert!(
        table.contains(&format!("3 dead letter(s) in file {}", dead.display())),
        "{table}"
    );
    for i in 1..=3 {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("dl-{i} ")))
            .unwrap_or_else(|| panic!("no row for dl-{i}: {table}"));
        assert!(
            row.contains(&watcher) && row.contains("com.example.dl"),
            "{row}"
        );
        assert!(row.contains("400"), "the reason: {row}");
    }
    let listed: Value =
        serde_json::from_str(&cli_ok(&portico, &["dead-letters", "list", "-o", "json"]).await)
            .expect("list -o json prints JSON");
    let listed_ids: Vec<&str> = listed["deadLetters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids.len(), 3);
    assert!(listed["deadLetters"][0]["deadletterreason"].is_string());

    // redrive one by id, and one that does not exist: exit 1, the other delivered.
    let url = portico.url("");
    let (code, stdout, stderr) = cli(
        &[
            "dead-letters",
            "redrive",
            "--url",
            &url,
            "dl-2",
            "no-such-id",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "a missing id fails the command: {stderr}");
    assert!(stdout.contains("delivered  dl-2"), "{stdout}");
    assert!(stdout.contains("missing    no-such-id"), "{stdout}");
    assert!(stderr.contains("1 dead letter(s) not redriven"), "{stderr}");
    assert_eq!(wait_for_id(&sink, "dl-2").await["type"], "com.example.dl");
    let mut left = dead_letter_ids(&dead);
    left.sort();
    assert_eq!(left, ["dl-1", "dl-3"]);

    // redrive --all: the rest, and the file holds none of them.
    let out = cli_ok(&portico, &["dead-letters", "redrive", "--all"]).await;
    assert!(
        out.contains("delivered  dl-1") && out.contains("delivered  dl-3"),
        "{out}"
    );
    assert!(out.contains("2 delivered"), "{out}");
    wait_for_id(&sink, "dl-1").await;
    wait_for_id(&sink, "dl-3").await;
    assert!(
        dead_letter_ids(&dead).is_empty(),
        "redriven letters leave the file"
    );
    for id in ["dl-1", "dl-2", "dl-3"] {
        assert_eq!(with_id(&sink, id).len(), 1, "{id} delivered once");
    }
    let table = cli_ok(&portico, &["dead-letters", "list"]).await;
    assert!(table.starts_with("No dead letters"), "{table}");
    let out = cli_ok(&portico, &["dead-letters", "redrive", "--all"]).await;
    assert!(out.contains("No dead letters to redrive"), "{out}");
    portico.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_sent_to_a_url_cannot_be_listed_and_the_command_says_why() {
    let sink = Sink::start(Behaviour::Ok).await;
    let (_dir, file) = independent("dlu", &sink)
        .spec_lines(&format!(
            "  delivery:\n    deadLetter: {{url: \"{}\"}}\n",
            sink.url()
        ))
        .write();
    let portico = Portico::run(&file).await;
    let url = portico.url("");
    let (code, _, stderr) = cli(&["dead-letters", "list", "--url", &url], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("error: the dead letters cannot be listed: "),
        "{stderr}"
    );
    portico.kill().await;
}

#[tokio::test]
async fn completions_print_a_script_for_each_shell() {
    let (code, stdout, stderr) = cli(&["completions", "bash"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("_portico()") && stdout.contains("complete "),
        "{stdout}"
    );
    for sub in [
        "status",
        "tail",
        "send",
        "dead-letters",
        "redrive",
        "--token-file",
    ] {
        assert!(stdout.contains(sub), "the script knows {sub}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, stdout, stderr) = cli(&["completions", shell], &[]).await;
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(stdout.contains("portico"), "{shell}");
    }
    let (code, _, _) = cli(&["completions", "tcsh"], &[]).await;
    assert_eq!(code, Some(2), "an unknown shell is a usage error");
}

#[tokio::test]
async fn a_port_where_no_gateway_listens_gives_a_clear_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let expected = format!(
        "error: no gateway answers at {url} (connection refused): is `portico run` running"
    );
    for args in [
        vec!["status", "--url", url.as_str()],
        vec!["tail", "--url", url.as_str()],
        vec![
            "send",
            "--url",
            url.as_str(),
            "--type",
            "t",
            "--source",
            "/s",
        ],
        vec!["dead-letters", "list", "--url", url.as_str()],
        vec!["dead-letters", "redrive", "--all", "--url", url.as_str()],
    ] {
        let (code, stdout, stderr) = cli(&args, &[]).await;
        assert_eq!(code, Some(1), "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(stderr.contains("--url or PORTICO_URL"), "{stderr}");
    }
    // The same address from PORTICO_URL, and from TRANSFORMER_PORT.
    let port_text = port.to_string();
    for env in [
        ("PORTICO_URL", url.as_str()),
        ("TRANSFORMER_PORT", port_text.as_str()),
    ] {
        let (code, _, stderr) = cli(&["status"], &[env]).await;
        assert_eq!(code, Some(1));
        assert!(stderr.contains(&expected), "{env:?}: {stderr}");
    }
    // Usage mistakes are clap's (exit 2).
    let (code, _, stderr) = cli(&["send", "--url", &url], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, _) = cli(&["dead-letters", "redrive", "--url", &url], &[]).await;
    assert_eq!(code, Some(2));
}

/// A stand-in for a gateway that answers `POST /` from a script (then 200), recording the
/// bodies and when they came.
struct Scripted {
    url: String,
    bodies: Arc<Mutex<Vec<(std::time::Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(script: Vec<(u16, &'static str, &'static str)>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (b, s) = (bodies.clone(), script.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: String| {
                let (b, s) = (b.clone(), s.clone());
                async move {
                    b.lock().unwrap().push((std::time::Instant::now(), body));
                    let (status, retry_after, reason) =
                        s.lock().unwrap().pop_front().unwrap_or((200, "", ""));
                    let mut r = axum::response::Response::new(axum::body::Body::from(reason));
                    *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    if !retry_after.is_empty() {
                        r.headers_mut()
                            .insert("retry-after", retry_after.parse().unwrap());
                    }
                    r
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Scripted { url, bodies, task }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn send_retries_a_full_gateway_as_retry_after_says_and_resends_only_the_refused_rest() {
    // One event: refused twice (503, Retry-After: 1), then accepted.
    let gw = Scripted::start(vec![
        (503, "1", "the gateway is full"),
        (503, "1", "the gateway is full"),
    ])
    .await;
    let (code, stdout, stderr) = cli(
        &[
            "send", "--url", &gw.url, "--type", "t", "--source", "/s", "--id", "r-1",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("accepted: id r-1"), "{stdout}");
    assert_eq!(
        stderr
            .matches("the gateway is full (503: the gateway is full); trying again in 1s")
            .count(),
        2,
        "{stderr}"
    );
    let bodies = gw.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    for pair in bodies.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(900),
            "Retry-After honoured"
        );
        assert_eq!(pair[0].1, pair[1].1, "the same event again");
    }

    // A batch refused after its first event: only the other two are sent again.
    let gw = Scripted::start(vec![(
        503,
        "1",
        "accepted 1 of 3 events of the batch; then: the gateway is full",
    )])
    .await;
    let batch = r#"[{"specversion": "1.0", "id": "b-1", "source": "/s", "type": "t"},
        {"specversion": "1.0", "id": "b-2", "source": "/s", "type": "t"},
        {"specversion": "1.0", "id": "b-3", "source": "/s", "type": "t"}]"#;
    let (code, stdout, stderr) = cli(&["send", "--url", &gw.url, "--json", batch], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("accepted 3 events"), "{stdout}");
    let bodies = gw.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let resent: Vec<Value> = serde_json::from_str(&bodies[1].1).unwrap();
    let ids: Vec<&str> = resent.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["b-2", "b-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_gives_up_on_a_gateway_that_stays_full_and_says_so() {
    let sink = Sink::start(Behaviour::Hang).await;
    let (_dir, file) = independent("full", &sink)
        .spec_lines("  delivery:\n    queueSize: 2\n    concurrency: 1\n    timeout: 60s")
        .write();
    let portico = Portico::start(
        &["run", file.to_str().unwrap(), "--admission-wait", "0s"],
        &[],
    )
    .await;
    let url = portico.url("");
    // Fill it.
    let mut refused = false;
    for i in 0..50 {
        let body = format!(r#"{{"src": "fill-{i}", "payload": "aGk="}}"#);
        let r = portico
            .http
            .post(portico.url("/"))
            .body(body)
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the gateway fills up");
    let (code, _, stderr) = cli(
        &["send", "--url", &url, "--type", "t", "--source", "/s"],
        &[],
    )
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(stderr.matches("trying again in").count(), 4, "{stderr}");
    assert!(
        stderr.contains("error: the gateway is full: it refused the event 5 times (try again later): the gateway answered 503"),
        "{stderr}"
    );
    portico.kill().await;
}

/// A pod of Gateway `gateway` as the controller makes it, with the transformer on `port`.
fn gateway_pod(name: &str, ns: &str, gateway: &str, port: u16, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"portico.dev/gateway": gateway}},
        "spec": {"containers": [{"name": "gateway", "image": "portico",
            "env": [{"name": "TRANSFORMER_PORT", "value": port.to_string()}]}]},
        "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_in_a_cluster_is_reached_by_name_through_the_api_servers_pod_proxy() {
    let sink = Sink::start(Behaviour::Script(vec![400])).await;
    let dead_dir = tempfile::tempdir().unwrap();
    let dead = dead_dir.path().join("dead.jsonl");
    let (dir, file) = independent("gw", &sink)
        .spec_lines(&format!(
            "  delivery:\n    deadLetter: {{file: \"{}\"}}\n",
            dead.display()
        ))
        .write();
    let portico = Portico::run(&file).await;
    let fake = fake_kube::FakeKube::start().await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let kube_env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    // The gateway's running pod (its transformer on 9400), an older pod still starting, and
    // another gateway's pod.
    fake.create(gateway_pod("gw-gateway-old", "team", "gw", 9400, "Pending"));
    fake.create(gateway_pod("gw-gateway-abc", "team", "gw", 9400, "Running"));
    fake.create(gateway_pod(
        "other-gateway-x",
        "team",
        "other",
        9400,
        "Running",
    ));
    fake.proxy_pod("team", "gw-gateway-abc", 9400, portico.addr);
    let by_name = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--gateway", "gw", "-n", "team"]);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args, &kube_env).await
    };

    // status: the same as /status.
    let mut compared = false;
    for _ in 0..5 {
        let before = portico.status().await;
        let (code, stdout, stderr) = run(by_name(&["status", "-o", "json"])).await;
        assert_eq!(code, Some(0), "{stderr}");
        if before == portico.status().await {
            assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), before);
            compared = true;
            break;
        }
    }
    assert!(compared);
    let (code, stdout, _) = run(by_name(&["status"])).await;
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("Gateway gw in namespace "), "{stdout}");

    // send: the first event is refused by the watcher (a dead letter), the second delivered.
    for id in ["k-1", "k-2"] {
        let (code, stdout, stderr) = run(by_name(&[
            "send", "--type", "t", "--source", "/kube", "--id", id,
        ]))
        .await;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains(&format!("accepted: id {id}")), "{stdout}");
    }
    wait_for_id(&sink, "k-2").await;
    eventually(WAIT, || (dead_letter_ids(&dead) == ["k-1"]).then_some(()))
        .await
        .expect("k-1 dead-lettered");

    // dead-letters: listed and redriven through the proxy.
    let (code, stdout, stderr) = run(by_name(&["dead-letters", "list"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("k-1 ")), "{stdout}");
    let (code, stdout, stderr) = run(by_name(&["dead-letters", "redrive", "--all"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("delivered  k-1"), "{stdout}");
    wait_for_id(&sink, "k-1").await;
    assert!(dead_letter_ids(&dead).is_empty());

    // tail: streamed through the proxy.
    let tail_args = by_name(&["tail", "-o", "json", "--count", "1", "--filter", "streamed"]);
    let tail_args: Vec<&str> = tail_args.iter().map(String::as_str).collect();
    let mut cmd = command(&tail_args, &kube_env);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let tail = cmd.spawn().expect("spawn portico tail");
    let output = tail.wait_with_output();
    let poster = async {
        let mut n = 0;
        loop {
            n += 1;
            let body = json!({"specversion": "1.0", "id": format!("streamed-{n}"),
                "source": "/kube", "type": "t"});
            let r = portico
                .http
                .post(portico.url("/"))
                .header("content-type", "application/cloudevents+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let output = tokio::select! {
        out = tokio::time::timeout(Duration::from_secs(30), output) => out
            .expect("tail prints an event within 30s")
            .expect("tail's output"),
        _ = poster => unreachable!(),
    };
    assert_eq!(output.status.code(), Some(0));
    let line = String::from_utf8_lossy(&output.stdout);
    let e: Value = serde_json::from_str(line.trim()).expect("one CloudEvent line");
    assert!(e["id"].as_str().unwrap().starts_with("streamed-"), "{line}");

    // What goes wrong is said: no such Gateway (the kubeconfig's namespace by default), a
    // port the pod does not serve.
    let (code, _, stderr) = cli(&["status", "--gateway", "gw"], &kube_env).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no running pod of Gateway `gw` in namespace `default`"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["status", "--gateway", "nope", "-n", "team"], &kube_env).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no running pod of Gateway `nope`"),
        "{stderr}"
    );
    fake.create(gateway_pod(
        "lost-gateway-y",
        "team",
        "lost",
        9400,
        "Running",
    ));
    let (code, _, stderr) = cli(&["status", "--gateway", "lost", "-n", "team"], &kube_env).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("the Kubernetes API server answered 503: error trying to reach service"),
        "{stderr}"
    );
    // Every request went through the pod proxy of the running pod.
    let proxied: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/proxy"))
        .map(|r| r.path)
        .collect();
    assert!(!proxied.is_empty());
    assert!(
        proxied.iter().all(|p| p
            .starts_with("/api/v1/namespaces/team/pods/gw-gateway-abc:9400/proxy/")
            || p.starts_with("/api/v1/namespaces/team/pods/lost-gateway-y:9400/proxy/")),
        "{proxied:?}"
    );
    portico.kill().await;
}
