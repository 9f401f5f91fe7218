"""vidlab.infer: export-path parity, runtimes, the video predictor on good and bad files, streaming
with online TSM against the window model, the dynamic batcher, the CLI, the GPU check's CPU skip."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

import badfiles
import vidlab as vl
from vidlab.infer import batching, cli, export, predictor, runtime, streaming

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"class_{i}" for i in range(5)]


def _vit(seed: int = 0):
    torch.manual_seed(seed)
    return vl.models.create_model("vit_test", num_classes=len(CLASSES)).eval()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A vit_test saved with save_model: clips 4 frames x 32 px, stride 2, 5 named classes."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    vl.models.save_model(_vit(), path, class_names=CLASSES, frame_stride=2)
    return path


@pytest.fixture(scope="module")
def built(saved_model, tmp_path_factory):
    """Every export path of the saved model, built once (torch.compile and AOTInductor take seconds)."""
    model, info = vl.models.load_model(saved_model, with_info=True)
    example = torch.randn(2, 3, info.num_frames, info.img_size, info.img_size)
    out = tmp_path_factory.mktemp("export")
    paths = export.build_paths(model, example, out, meta=export.deploy_info(info), warm_batches=(2,), max_batch=16,
                               dynamic_compile=True, progress=False)
    return model, info, paths


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "good": badfiles.make_h264_mp4(d, 30),
        "good2": badfiles.make_h264_mp4(d, 24, name="second.mp4"),
        "empty": badfiles.make_empty(d),
        "playlist": badfiles.make_hls_playlist(d),
        "corrupt": badfiles.make_corrupted_bitstream(d),
        "short": badfiles.make_short(d),
        "truncated": badfiles.make_truncated_moov_at_end(d),
        "missing": d / "no_such_video.mp4",
    }


# ------------------------------------------------------------------------------------ exports

def test_every_export_path_matches_eager_with_dynamic_batch(built):
    model, info, paths = built
    assert list(paths) == ["eager", "torch.export", "torch.compile", "aoti", "onnx"]
    for batch in (1, 3):  # neither was traced: the batch dimension is dynamic
        clips = torch.randn(batch, 3, info.num_frames, info.img_size, info.img_size)
        for name, path in paths.items():
            if name == "torch.compile" and batch == 1:
                continue  # batch 1 would compile a graph of its own (seconds); 3 runs the symbolic one
            diff = export.max_abs_diff(path.fn, model, clips)
            assert diff < 1e-4, f"{name} at batch {batch}: {diff}"
    with torch.no_grad():
        logits = paths["onnx"].fn(torch.randn(3, 3, info.num_frames, info.img_size, info.img_size))
    assert logits.shape == (3, len(CLASSES))


def test_export_files_carry_metadata_and_reload(built):
    _, info, paths = built
    expected = {"torch.export": "model.pt2", "aoti": "model_aoti.pt2", "onnx": "model.onnx"}
    for name, filename in expected.items():
        path = paths[name]
        assert path.path.name == filename and path.size_bytes > 0 and path.build_s > 0
        loaded = runtime.load_runtime(path.path)
        assert loaded.kind == name
        assert loaded.class_names == CLASSES
        assert (loaded.meta["num_frames"], loaded.meta["img_size"], loaded.meta["frame_stride"]) == (info.num_frames, info.img_size, 2)


def test_detect_kind_and_unusable_model_files(saved_model, tmp_path):
    assert runtime.detect_kind(saved_model) == "vidlab"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(runtime.ModelFileError, match="junk.bin"):
        runtime.load_runtime(junk)
    other_zip = tmp_path / "other.pt2"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("x/readme.txt", "hello")
    with pytest.raises(runtime.ModelFileError, match="other.pt2"):
        runtime.load_runtime(other_zip)
    broken_onnx = tmp_path / "broken.onnx"
    broken_onnx.write_bytes(b"\x08\x07garbage")
    with pytest.raises(runtime.ModelFileError, match="broken.onnx"):
        runtime.load_runtime(broken_onnx)
    with pytest.raises(runtime.ModelFileError, match="missing.pt"):
        runtime.load_runtime(tmp_path / "missing.pt")


def test_deploy_info_requires_geometry():
    with pytest.raises(ValueError, match="num_frames"):
        export.deploy_info(name="x", mean=(0.5,) * 3, std=(0.2,) * 3, img_size=32, frame_stride=1)


# ---------------------------------------------------------------------------------- predictor

def _task(saved_model, views: int = 2) -> predictor.Task:
    rt = runtime.load_runtime(saved_model)
    return predictor.Task(rt, predictor.ClipSpec.from_meta(rt.meta, views=views), rt.class_names)


def test_predictor_good_and_bad_files(saved_model, videos):
    order = ["good", "empty", "playlist", "good2", "corrupt", "short", "truncated", "missing"]
    vp = predictor.VideoPredictor(_task(saved_model), batch_size=3)
    report = vp.predict([videos[k] for k in order])
    assert [Path(r.path).name for r in report.results] == [videos[k].name for k in order]
    by_kind = dict(zip(order, report.results))
    for kind in ("good", "good2"):
        result = by_kind[kind]
        assert result.ok, result.error
        assert torch.isclose(result.probs["model"].sum(), torch.tensor(1.0), atol=1e-5)
        top = result.topk(3)
        assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and top[0][0] in CLASSES
    for kind in ("empty", "playlist", "corrupt", "short", "truncated", "missing"):
        result = by_kind[kind]
        assert not result.ok and videos[kind].name in result.error, (kind, result.error)
        with pytest.raises(ValueError, match=videos[kind].name):
            result.topk()
    assert len(report.failed) == 6 and report.videos_per_s > 0


def test_predictor_overlap_gives_the_same_answers_and_matches_the_model(saved_model, videos):
    task = _task(saved_model, views=2)
    paths = [videos["good"], videos["good2"], videos["empty"]]
    vp = predictor.VideoPredictor(task, batch_size=2)
    a, b = vp.predict(paths, overlap=True), vp.predict(paths, overlap=False)
    for x, y in zip(a.results, b.results):
        assert x.error == y.error
        if x.ok:
            torch.testing.assert_close(x.probs["model"], y.probs["model"])
    views = predictor.decode_views(videos["good"], [task.spec])[0]
    assert views.shape == (2, 3, 4, 32, 32)
    with torch.no_grad():
        expected = task.fn(views).softmax(-1).mean(0)
    torch.testing.assert_close(a.results[0].probs["model"], expected, atol=1e-5, rtol=1e-5)


def test_two_tasks_share_one_decode(saved_model, videos, monkeypatch):
    calls = []
    real = predictor.decode_frames
    monkeypatch.setattr(predictor, "decode_frames", lambda path, times: calls.append(path) or real(path, times))
    tsm = vl.models.create_model("test_tsm_online", num_classes=3, num_frames=6).eval()
    tasks = {"vit": _task(saved_model), "tsm": predictor.Task(tsm, predictor.ClipSpec(6, 32, 1, views=3), ["a", "b", "c"])}
    report = predictor.VideoPredictor(tasks, batch_size=4).predict([videos["good"], videos["good2"]])
    assert len(calls) == 2  # one decode per video for both models
    for result in report.results:
        assert set(result.probs) == {"vit", "tsm"}
        assert result.topk(1, task="tsm")[0][0] in {"a", "b", "c"}


# ---------------------------------------------------------------------------------- streaming

def _online(window: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    return vl.models.create_model("test_tsm_online", num_classes=4, num_frames=window, fold_div=4).eval()


def test_online_tsm_is_causal():
    model = _online()
    clip = torch.randn(1, 3, 8, 32, 32)
    changed = clip.clone()
    changed[:, :, 5:] = torch.randn_like(changed[:, :, 5:])
    with torch.no_grad():
        a, b = model.forward_features(clip), model.forward_features(changed)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5])  # the future never leaks into the past
    assert (a[:, :, 5:] - b[:, :, 5:]).abs().max() > 1e-3


def test_stream_equals_the_window_model_frame_by_frame():
    window = 8
    model = _online(window)
    clip = torch.randn(2, 3, 14, 32, 32)
    stream = streaming.OnlineStream(model, window)
    outs = torch.stack([stream.step(clip[:, :, t]) for t in range(clip.shape[2])])
    reference = streaming.causal_reference(model, clip, window)
    assert (outs - reference).abs().max() < 1e-4
    with torch.no_grad():
        for t in range(window):  # while the stream is shorter than the window: the model on every frame so far
            assert (outs[t] - model(clip[:, :, :t + 1])).abs().max() < 1e-4
    assert stream.cache_bytes() > 0
    stream.reset()
    torch.testing.assert_close(stream.step(clip[:, :, 0]), outs[0])  # reset forgets the past


def test_window_rerun_runs_the_clip_model_on_the_last_frames():
    model = _online(4)
    clip = torch.randn(1, 3, 7, 32, 32)
    rerun = streaming.WindowRerun(model, 4)
    outs = [rerun.step(clip[:, :, t]) for t in range(7)]
    with torch.no_grad():
        torch.testing.assert_close(outs[-1], model(clip[:, :, 3:7]))


def test_streaming_rejects_an_offline_model():
    with pytest.raises(TypeError, match="online"):
        streaming.OnlineStream(vl.models.create_model("test_tsm", num_classes=3), 4)


def test_frame_source_reads_a_file_as_a_live_stream(videos):
    frames = list(streaming.FrameSource(videos["good"]))
    assert len(frames) == 30
    times = [t for t, _ in frames]
    assert times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))
    assert frames[0][1].shape == (48, 64, 3) and badfiles.read_frame_index(frames[7][1]) == 7
    start = time.perf_counter()
    paced = list(streaming.FrameSource(videos["good"], realtime=True, max_frames=6))
    assert len(paced) == 6 and time.perf_counter() - start >= 5 / badfiles.FPS * 0.9
    every_third = list(streaming.FrameSource(videos["good"], every=3, max_frames=5))
    assert [badfiles.read_frame_index(f) for _, f in every_third] == [0, 3, 6, 9, 12]
    assert [t for t, _ in every_third] == [times[i] for i in (0, 3, 6, 9, 12)]
    with pytest.raises(ValueError, match="every"):
        streaming.FrameSource(videos["good"], every=0)
    with pytest.raises(vl.data.VideoDecodeError, match="hls_playlist"):
        list(streaming.FrameSource(videos["playlist"]))
    transform = streaming.frame_transform(32, (0.45,) * 3, (0.225,) * 3)
    trace = streaming.run_stream(streaming.FrameSource(videos["good"], max_frames=10), streaming.OnlineStream(_online(), 8), transform)
    assert trace.logits.shape == (10, 4) and len(trace.latency_ms) == 10 and (trace.latency_ms > 0).all()


# ----------------------------------------------------------------------------------- batching

def _slow_double(delay: float = 0.02):
    def fn(batch):
        time.sleep(delay)
        return batch * 2

    return fn


def test_batcher_groups_up_to_max_batch_and_loses_nothing():
    items = [torch.full((3,), float(i)) for i in range(23)]
    with batching.DynamicBatcher(_slow_double(), max_batch=4, max_wait_ms=50) as batcher:
        futures = [batcher.submit(x) for x in items]  # all at once: full batches form
    for x, f in zip(items, futures):
        torch.testing.assert_close(f.result(timeout=5), x * 2)
    assert sum(batcher.batch_sizes) == 23 and max(batcher.batch_sizes) == 4
    assert batcher.batch_sizes.count(4) >= 5


def test_batcher_respects_max_wait_for_a_lonely_request():
    with batching.DynamicBatcher(lambda b: b + 1, max_batch=8, max_wait_ms=60) as batcher:
        start = time.perf_counter()
        value = batcher.submit(torch.zeros(2)).result(timeout=5)
        waited = time.perf_counter() - start
    torch.testing.assert_close(value, torch.ones(2))
    assert 0.05 <= waited < 1.0, waited  # it waited for company, then went alone
    assert batcher.batch_sizes == [1]
    with batching.DynamicBatcher(lambda b: b + 1, max_batch=8, max_wait_ms=0) as batcher:
        start = time.perf_counter()
        batcher.submit(torch.zeros(2)).result(timeout=5)
        assert time.perf_counter() - start < 0.05


def test_batcher_concurrent_clients_errors_and_close():
    results = {}

    def client(k):
        with_ids = [(k * 100 + i, batcher.submit(torch.tensor([float(k * 100 + i)]))) for i in range(20)]
        for key, f in with_ids:
            results[key] = f.result(timeout=10)

    batcher = batching.DynamicBatcher(_slow_double(0.002), max_batch=6, max_wait_ms=2)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(results) == 80 and all(float(v) == 2 * k for k, v in results.items())
    assert sum(batcher.batch_sizes) == 80 == batcher.submitted
    with pytest.raises(RuntimeError, match="after close"):
        batcher.submit(torch.zeros(1))

    def broken(batch):
        raise ValueError("model exploded")

    with batching.DynamicBatcher(broken, max_batch=4, max_wait_ms=1) as bad:
        futures = [bad.submit(torch.zeros(1)) for _ in range(5)]
    for f in futures:
        with pytest.raises(ValueError, match="exploded"):
            f.result(timeout=5)


def test_simulate_load_answers_every_request():
    result = batching.simulate_load(_slow_double(0.004), torch.zeros(3), rate_per_s=400, requests=60, max_batch=8,
                                    max_wait_ms=5)
    assert result.sent == result.answered == 60
    assert result.mean_batch > 1 and result.throughput > 0 and result.p95_ms >= result.p50_ms


# ---------------------------------------------------------------------------------------- CLI

def test_cli_predicts_good_files_and_names_bad_ones(saved_model, videos, capsys):
    args = [str(saved_model), str(videos["good"]), str(videos["playlist"]), str(videos["good2"]),
            str(videos["corrupt"]), str(videos["missing"]), "--topk", "2"]
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(videos["good"])) and lines[1].startswith(str(videos["good2"]))
    assert all(len(line.split(": ", 1)[1].split(", ")) == 2 for line in lines)
    for kind in ("playlist", "corrupt", "missing"):
        assert str(videos[kind]) in err
    assert "3 of 5 videos" in err
    assert cli.main([str(saved_model), str(videos["good"]), "--json", "--topk", "3"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["kind"] == "vidlab" and len(document["videos"][0]["topk"]) == 3


def test_cli_runs_every_model_kind_alike(built, saved_model, videos, capsys):
    _, _, paths = built
    answers = []
    for model_file in (saved_model, paths["torch.export"].path, paths["onnx"].path, paths["aoti"].path):
        assert cli.main([str(model_file), str(videos["good"]), "--json", "--topk", "5"]) == 0
        answers.append(json.loads(capsys.readouterr().out)["videos"][0]["topk"])
    for other in answers[1:]:
        assert [a["class"] for a in other] == [a["class"] for a in answers[0]]
        assert all(abs(a["prob"] - b["prob"]) < 1e-4 for a, b in zip(other, answers[0]))


def test_cli_bad_model_or_arguments_exit_2(tmp_path, videos, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    assert cli.main([str(junk), str(videos["good"])]) == 2
    assert "junk.onnx" in capsys.readouterr().err
    assert cli.main([str(junk), str(videos["good"]), "--topk", "0"]) == 2
    assert cli.main([]) == 2


def test_python_m_vidlab_predict_dispatches(saved_model, videos):
    run = subprocess.run([sys.executable, "-m", "vidlab", "predict", str(saved_model), str(videos["good"]),
                          str(videos["empty"]), "--topk", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith(str(videos["good"])) and str(videos["empty"]) in run.stderr


# ------------------------------------------------------------------------------ GPU-only paths

def test_gpu_paths_skip_with_a_reason_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: benchmarks/gpu_check.py measures these paths")
    from vidlab.infer import cuda

    result = cuda.cuda_inference_paths(_vit(), torch.randn(1, 3, 4, 32, 32))
    assert set(result) == {"skipped"} and "CUDA" in result["skipped"]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stdout and "CUDA" in run.stdout
