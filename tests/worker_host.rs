//! The model host and its client over a real Unix socket, with the real model
//! that scripts/setup.sh installs ($INF_IR_HOME). No PostgreSQL: the host is
//! pure Rust. Skips, saying so, when the model is not installed.

use inf_ir::engine::embed::fingerprint::model_fingerprint;
use inf_ir::engine::gpu::device::DevicePreference;
use inf_ir::engine::{BatchOptions, EmbedInput, Embedder, EmbeddingModel, ErrorKind, NeverInterrupt, RuntimeOptions};
use inf_ir::worker::client::{Connection, PollWaiter};
use inf_ir::worker::host::{serve, HostSettings};
use inf_ir::worker::protocol::{EmbedRequest, ModelRef, OwnedInput, Request, Response, WorkerStatus};
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

fn model_ref() -> Option<ModelRef> {
    let (spec, folder) = common::minilm_spec()?;
    let fingerprint = model_fingerprint(&folder, &spec.onnx_file, &spec.tokenizer_file).unwrap();
    Some(ModelRef {
        spec,
        folder,
        fingerprint,
        library: common::library(),
    })
}

/// One host per test process, on a socket in a fresh temporary directory.
fn socket() -> &'static PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("inf_ir_host_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("worker.sock");
        // A socket left by an earlier process that had this pid would make bind fail.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let settings = HostSettings {
            threads: 2,
            batch: BatchOptions::default(),
            batch_wait: Duration::from_millis(2),
            // Background pieces give way to other processes (the test that
            // runs CPU hogs), not to this process's own test threads.
            background_yield: Duration::from_secs(3),
            max_models: 2,
            supervisor_pid: 0,
            host_starts: 1,
            // Asked for; without a GPU (CI) the CPU answers and says why.
            embed_device: DevicePreference::Cuda,
            // The CPU-only ONNX Runtime here has no CUDA provider: the same.
            onnxruntime_cuda: true,
        };
        std::thread::spawn(move || serve(listener, settings));
        path
    })
}

fn embed_request(model: &ModelRef, inputs: Vec<OwnedInput>) -> Request {
    Request::Embed(EmbedRequest {
        model: model.clone(),
        inputs,
        background: false,
    })
}

fn call(request: &Request) -> Response {
    Connection::connect(socket())
        .unwrap()
        .call(request, &PollWaiter)
        .unwrap()
}

fn status() -> WorkerStatus {
    match call(&Request::Status) {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_vectors_equal_a_local_model_bit_for_bit() {
    let Some(model) = model_ref() else { return };
    let inputs = vec![
        OwnedInput::Passage("The mitochondria is the powerhouse of the cell.".into()),
        OwnedInput::Passage(String::new()),
        OwnedInput::Query {
            instruction: Some("only peer-reviewed sources".into()),
            query: "does vitamin d prevent fractures".into(),
        },
        OwnedInput::Query {
            instruction: None,
            query: "x ".repeat(5000),
        },
    ];
    let Response::Vectors(remote) = call(&embed_request(&model, inputs.clone())) else {
        panic!()
    };
    let runtime = RuntimeOptions {
        library: model.library.clone(),
        intra_threads: 2,
        cuda_provider: false,
    };
    let local = EmbeddingModel::load(model.spec.clone(), &runtime).unwrap();
    let borrowed: Vec<EmbedInput<'_>> = inputs.iter().map(OwnedInput::as_input).collect();
    let expected = local
        .embed(&borrowed, BatchOptions::default(), &NeverInterrupt)
        .unwrap();
    let on = status()
        .models
        .iter()
        .find(|m| m.name == model.spec.name)
        .unwrap()
        .device
        .clone();
    if on.starts_with("cuda") {
        // The GPU copy (float16): close to ONNX Runtime, not equal.
        for (a, b) in remote.iter().zip(&expected) {
            assert!(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() > 0.999, "{on}");
        }
    } else {
        assert_eq!(remote, expected);
    }
}

#[test]
fn cuda_without_a_gpu_falls_back_to_the_cpu_and_says_why() {
    let Some(model) = model_ref() else { return };
    let Response::Vectors(v) = call(&embed_request(&model, vec![OwnedInput::Passage("x".into())])) else {
        panic!()
    };
    assert_eq!(v[0].len(), model.spec.dimension);
    let s = status();
    let on = &s.models.iter().find(|m| m.name == model.spec.name).unwrap().device;
    assert!(s.embed_device.starts_with("cuda: "), "{}", s.embed_device);
    if !inf_ir::engine::gpu::device::probe(0).is_cuda() {
        // The probe's reason, in the model's row and in the setting's summary.
        assert!(
            on.starts_with("cpu (") && on.contains("ONNX Runtime's CUDA provider: "),
            "{on}"
        );
        assert!(s.embed_device.starts_with("cuda: cpu ("), "{}", s.embed_device);
    }
}

#[test]
fn concurrent_clients_are_batched_and_each_gets_its_own_vectors() {
    let Some(model) = model_ref() else { return };
    let before = status();
    let threads: Vec<_> = (0..6)
        .map(|c| {
            let model = model.clone();
            std::thread::spawn(move || {
                let mut connection = Connection::connect(socket()).unwrap();
                (0..8)
                    .map(|i| {
                        let text = format!("client {c} passage {i}");
                        let request = embed_request(&model, vec![OwnedInput::Passage(text.clone())]);
                        let Response::Vectors(mut v) = connection.call(&request, &PollWaiter).unwrap() else {
                            panic!()
                        };
                        (text, v.pop().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(String, Vec<f32>)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let after = status();
    // Other tests share this host, so only lower bounds hold here.
    assert!(after.requests - before.requests >= 48);
    // Each answer is the vector of its own text, whatever batch it ran in.
    for (text, v) in results.iter().step_by(7) {
        let Response::Vectors(alone) = call(&embed_request(&model, vec![OwnedInput::Passage(text.clone())])) else {
            panic!()
        };
        let cosine: f32 = alone[0].iter().zip(v).map(|(a, b)| a * b).sum();
        assert!(cosine > 0.99999, "{text}: cosine {cosine}");
    }
}

#[test]
fn an_interactive_request_goes_between_the_pieces_of_a_background_one() {
    let Some(model) = model_ref() else { return };
    // Lengths that vary, so that the background request runs in several
    // pieces, longest first, and its answer must be put back in order.
    let texts: Vec<OwnedInput> = (0..240)
        .map(|i| OwnedInput::Passage(format!("passage {i} {}", "word ".repeat(5 + (i * 37) % 180))))
        .collect();
    let background = Request::Embed(EmbedRequest {
        model: model.clone(),
        inputs: texts.clone(),
        background: true,
    });
    let before = status();
    let runner = std::thread::spawn(move || {
        let answer = call(&background);
        (answer, Instant::now())
    });
    // Once the host runs it (a batch is running and its texts arrived).
    loop {
        let s = status();
        if s.running > 0 && s.texts >= before.texts + texts.len() as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let running_since = Instant::now();
    let Response::Vectors(quick) = call(&embed_request(
        &model,
        vec![OwnedInput::Passage("an interactive one".into())],
    )) else {
        panic!()
    };
    let quick_after = running_since.elapsed();
    assert_eq!(quick[0].len(), model.spec.dimension);
    let (answer, background_done) = runner.join().unwrap();
    let Response::Vectors(from_background) = answer else {
        panic!()
    };
    // Answered between two pieces, not after the whole request (a ratio of
    // two durations of the same run, not a speed).
    let background_after = background_done - running_since;
    assert!(
        quick_after < background_after / 2,
        "the interactive request took {quick_after:?}, the background one {background_after:?}: it waited for the whole of it"
    );
    // The same vectors as one interactive request of the same texts.
    let Response::Vectors(expected) = call(&embed_request(&model, texts)) else {
        panic!()
    };
    assert_eq!(from_background, expected);
}

/// Processes that each keep a core busy until dropped.
struct CpuHogs(Vec<std::process::Child>);

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

#[test]
fn a_background_request_gives_way_while_other_processes_want_the_cores() {
    let Some(model) = model_ref() else { return };
    if !std::path::Path::new("/proc/stat").exists() {
        eprintln!("skipped: no /proc/stat to see other processes' CPU by");
        return;
    }
    // Texts of about 100 tokens: several pieces of 2,048.
    let texts: Vec<OwnedInput> = (0..60)
        .map(|i| OwnedInput::Passage(format!("passage {i} {}", "word ".repeat(90 + i % 7))))
        .collect();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = CpuHogs(
        (0..cores)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("start a CPU hog")
            })
            .collect(),
    );
    let before = status();
    let Response::Vectors(from_background) = call(&Request::Embed(EmbedRequest {
        model: model.clone(),
        inputs: texts.clone(),
        background: true,
    })) else {
        panic!()
    };
    let after = status();
    drop(hogs);
    // Each piece after the first saw the hogs take CPU while it ran.
    assert!(
        after.background_wait_seconds > before.background_wait_seconds,
        "no background piece waited while {cores} other processes kept the cores busy"
    );
    // Waiting changes when, not what: the vectors of an interactive request.
    let Response::Vectors(expected) = call(&embed_request(&model, texts)) else {
        panic!()
    };
    assert_eq!(from_background, expected);
}

#[test]
fn errors_come_back_with_kind_and_hint() {
    let Some(mut model) = model_ref() else { return };
    model.fingerprint = "0".repeat(32);
    let Response::Error(e) = call(&embed_request(&model, vec![OwnedInput::Passage("x".into())])) else {
        panic!()
    };
    assert_eq!(e.kind, ErrorKind::ModelFiles);
    assert!(e.message.contains("changed since it was registered"), "{}", e.message);
    assert!(e.hint.is_some());
}

#[test]
fn a_client_that_leaves_is_dropped_and_the_host_goes_on() {
    let Some(model) = model_ref() else { return };
    let before = status();
    let long = embed_request(
        &model,
        (0..400)
            .map(|i| OwnedInput::Passage(format!("passage {i} {}", "word ".repeat(200))))
            .collect(),
    );
    let mut stream = UnixStream::connect(socket()).unwrap();
    stream.write_all(&long.encode()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    let t0 = Instant::now();
    loop {
        let s = status();
        if s.dropped > before.dropped {
            break;
        }
        // Generous: the model may still be loading, and other tests share the host.
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the host did not notice the client left: {before:?} -> {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let Response::Vectors(v) = call(&embed_request(&model, vec![OwnedInput::Passage("after".into())])) else {
        panic!()
    };
    assert_eq!(v[0].len(), 384);
}

#[test]
fn garbage_gets_an_error_frame_not_a_crash() {
    if model_ref().is_none() {
        return;
    }
    let mut stream = UnixStream::connect(socket()).unwrap();
    stream.write_all(&[1, 3, 0, 0, 0, b'{', b'x', b'}']).unwrap();
    let frame = inf_ir::worker::protocol::read_frame(&mut stream).unwrap().unwrap();
    assert!(matches!(
        Response::decode(frame.0, &frame.1).unwrap(),
        Response::Error(_)
    ));
    assert!(status().host_pid > 0);
}
