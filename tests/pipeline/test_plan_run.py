"""Plan (pure, no Dask), frame selection, and the executors end to end.

End-to-end tests use exact-format synthetic ScanNet (``tttkd.synthetic``), the real
reader, a real Zarr cache on disk, the tiny test teacher, real Dask clusters on 127.0.0.1 and
a real ``tttkd-prep`` process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import Frame, ImageRef, project
from tttkd.pipeline.cache import Cache, CacheError
from tttkd.pipeline.executors import DaskExecutor, SerialExecutor
from tttkd.pipeline.frames import ImagePolicy, frame_problem, select_frames
from tttkd.pipeline.plan import PrepConfig, estimate_scene_bytes, make_plan
from tttkd.pipeline.run import run_prep
from tttkd.pipeline.voxelize import voxelize

N_SCENES = 8
TINY = dict(teacher="test_vit_tiny", image_size=28, reader_options={"frames": "25k"})


def cfg(**kw) -> PrepConfig:
    return PrepConfig(**{"dataset": "scannet", "root": "/data", "out": "/x.zarr", **kw})


# ---- the plan, pure -----------------------------------------------------------------------
def test_plan_skips_complete_keeps_order_and_carries_config():
    c = cfg(voxel_size=0.05)
    p = make_plan(c, ["s2", "s0", "s1"], {"s0"}, teacher_spec={"name": "t"}, run_id="r1")
    assert p.scene_ids == ["s2", "s1"] and p.skipped == ["s0"]
    assert all(
        j.config is c and j.teacher_spec == {"name": "t"} and j.run_id == "r1" for j in p.jobs
    )
    assert make_plan(c, [], set()).jobs == []


def test_plan_scene_subset_and_errors():
    p = make_plan(cfg(scenes=("s1", "s3")), ["s1", "s2", "s3"], {"s3"})
    assert p.scene_ids == ["s1"] and p.skipped == ["s3"]
    with pytest.raises(ValueError, match="not found"):
        make_plan(cfg(scenes=("s9",)), ["s1"], set())
    with pytest.raises(ValueError, match="twice"):
        make_plan(cfg(), ["s1", "s1"], set())


def test_config_validation_and_image_policy():
    with pytest.raises(ValueError, match="unknown dataset"):
        cfg(dataset="kitti")
    with pytest.raises(ValueError, match="voxel_size"):
        cfg(voxel_size=0)
    with pytest.raises(ValueError, match="max_images"):
        cfg(max_images=-1)
    assert cfg().image_policy() == ImagePolicy(None, 0)  # ScanNet: every frame (25k subset)
    assert cfg(dataset="s3dis").image_policy() == ImagePolicy(50, 0)
    assert cfg(dataset="s3dis", max_images=0).image_policy().max_images is None
    assert cfg(max_images=5, seed=3).image_policy() == ImagePolicy(5, 3)
    rec = cfg(dataset="matterport3d", depth_abs_tol=0.1).image_policy_record()
    assert rec["selection"] == "random" and rec["max_images"] == 50
    assert rec["correspondence"]["depth_abs_tol"] == 0.1
    assert cfg(no_images=True).image_policy_record() == {"selection": "none", "no_images": True}
    assert cfg(no_images=True).load_options() == {"frames": None}
    # tttkd-prep --frames none reaches the reader as frames=None (no DeprecationWarning)
    assert cfg(reader_options={"frames": "none"}).load_options() == {"frames": None}


def _frame(name: str, c2w: np.ndarray | None = None) -> Frame:
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    return Frame(name, K, np.eye(4) if c2w is None else c2w, 64, 48, ImageRef("none.jpg"))


def test_select_frames_seeded_recorded_and_order_kept():
    frames = [_frame(f"{i:03d}") for i in range(80)]
    frames[5] = _frame("bad", np.full((4, 4), np.inf))
    frames[6] = _frame("flat", np.diag([1.0, 1.0, 0.0, 1.0]))
    pol = ImagePolicy(max_images=10, seed=7)
    a = select_frames(frames, pol, "sceneA")
    assert len(a.frames) == 10 and a.names == sorted(a.names)
    assert a.dropped == [("bad", "non-finite camera pose"), ("flat", "singular camera pose")]
    assert a.to_dict()["selected"] == a.names and a.available == 80
    assert select_frames(frames, pol, "sceneA").names == a.names  # seeded
    assert select_frames(frames, pol, "sceneB").names != a.names  # per scene
    assert select_frames(frames, ImagePolicy(10, 8), "sceneA").names != a.names
    assert len(select_frames(frames, ImagePolicy(None), "x").frames) == 78
    assert frame_problem(_frame("ok")) is None


def test_estimate_scene_bytes():
    b = estimate_scene_bytes(
        full_points=1000, voxels=100, images=2, pairs=50, grid_hw=(3, 4), dim=8
    )
    assert b == 100 * 17 + 1000 * 6 + 50 * 14 + 2 * 116 + 2 * 3 * 4 * 8 * 2


# ---- end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    root = tmp_path_factory.mktemp("scannet")
    truths = write_scannet_dataset(
        root,
        N_SCENES,
        frames=("25k",),
        splits=["train"] * 6 + ["val"] * 2,
        image_size=(64, 48),
        views=3,
        domain=Domain(spacing=0.06),
    )
    return root, {t.scene_id: t for t in truths}


def prep_config(root: Path, out: Path, **kw) -> PrepConfig:
    return PrepConfig(dataset="scannet", root=str(root), out=str(out), **{**TINY, **kw})


def contents(url: Path) -> dict:
    """Every complete scene's arrays and attributes, minus run stamps and timings."""
    cache = Cache.open(str(url), read_only=True)
    out = {}
    for sid in cache.scene_ids():
        rec = cache.read_scene(sid)
        info = dict(rec.attrs)
        info.pop("run"), info.pop("timing_s")
        arrays = {k: v for k, v in vars(rec).items() if isinstance(v, np.ndarray)}
        out[sid] = (arrays, info, rec.image_names, rec.split)
    return out


def assert_same_contents(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    for sid in a:
        (arr_a, info_a, names_a, split_a), (arr_b, info_b, names_b, split_b) = a[sid], b[sid]
        assert info_a == info_b and names_a == names_b and split_a == split_b
        assert sorted(arr_a) == sorted(arr_b)
        for k in arr_a:
            np.testing.assert_array_equal(arr_a[k], arr_b[k], err_msg=f"{sid} {k}")


@pytest.fixture(scope="module")
def serial_cache(dataset, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("serial") / "feats.zarr"
    report = run_prep(prep_config(root, out, scenes=_FIRST4), SerialExecutor(), progress=False)
    assert report.exit_code == 0 and len(report.done) == 4
    return out


_FIRST4 = tuple(f"scene{i:04d}_00" for i in range(4))


def test_serial_cache_is_verified_and_matches_the_rendered_truth(dataset, serial_cache):
    _, truths = dataset
    cache = Cache.open(str(serial_cache), read_only=True)
    assert cache.verify() == {s: [] for s in _FIRST4}
    assert cache.meta.teacher["name"] == "test_vit_tiny" and cache.meta.voxel_size == 0.04
    assert cache.meta.point_voxel_size == 0.01  # schema 2: points kept on voxel / 4
    n_hidden = 0
    for sid in _FIRST4:
        rec, truth = cache.read_scene(sid), truths[sid]
        vox = voxelize(truth.xyz, 0.01)
        np.testing.assert_array_equal(rec.xyz, truth.xyz[vox.keep])  # reader + voxelize
        np.testing.assert_array_equal(rec.voxel_of_point, vox.voxel_of_point)
        np.testing.assert_array_equal(rec.full_label, truth.label)
        frames = {f.name: f for f in truth.frames if f.valid}
        assert (
            rec.image_names == sorted(frames) and rec.attrs["frames"]["available"] == 3
        )  # reader skips -inf poses
        h, w = rec.features.shape[1:3]
        agree = total = 0
        for i, name in enumerate(rec.image_names):
            f = frames[name]
            s = slice(rec.corr_offsets[i], rec.corr_offsets[i + 1])
            pts, uv = rec.corr_point[s], rec.corr_uv[s].astype(np.float64)
            W, H = f.size_25k
            uv_pix = (uv + 0.5) * [W / w, H / h] - 0.5
            uv_true, z = project(rec.xyz[pts], f.K_25k, f.c2w)  # the truth's own camera
            np.testing.assert_allclose(uv_pix, uv_true, atol=2e-3)
            # the surface seen at the pair's pixel is the point's own box (rendered truth)
            iu, iv = np.floor(uv_true.T + 0.5).astype(int)
            agree += (f.box_index_25k[iv, iu] == truth.box_index[vox.keep][pts]).sum()
            total += len(pts)
            # points hidden behind a nearer surface (rendered depth, own camera) never pair
            all_uv, all_z = project(rec.xyz, f.depth_K, f.c2w)
            ju, jv = np.floor(all_uv.T + 0.5).astype(int)
            dw, dh = f.depth_size
            inside = (all_z > 0) & (ju >= 0) & (ju < dw) & (jv >= 0) & (jv < dh)
            d = np.full(len(all_z), np.inf)
            d[inside] = f.depth_mm[jv[inside], ju[inside]] / 1000.0
            hidden = inside & (d > 0) & (all_z - d > 1.2 * (0.05 + 0.1 * d))  # beyond tolerance
            n_hidden += hidden.sum()
            assert not np.isin(np.flatnonzero(hidden), pts).any()
        assert total > 0 and agree / total > 0.85
    assert n_hidden > 100  # the scenes do exercise occlusion


@pytest.fixture(scope="module")
def other_datasets(tmp_path_factory) -> dict[str, dict]:
    """Small exact-format S3DIS (+ 2D-3D-S) and Matterport3D roots, with reader options."""
    from tttkd.synthetic.matterport_writer import write_matterport_dataset
    from tttkd.synthetic.s3dis_writer import write_s3dis_dataset

    s3 = tmp_path_factory.mktemp("s3dis")
    write_s3dis_dataset(s3, 2, views=2, image_size=(48, 48))
    mp = tmp_path_factory.mktemp("matterport")
    write_matterport_dataset(mp, 2, regions_per_house=2, image_size=(48, 40), views=3)
    return {
        "s3dis": dict(root=s3 / "Stanford3dDataset_v1.2", reader_options={"images_root": str(s3)}),
        "matterport3d": dict(root=mp, reader_options={}),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.slow
def test_two_local_workers_equal_serial_on_all_three_datasets(
    dataset, serial_cache, other_datasets, tmp_path
):
    root, _ = dataset
    jobs = {"scannet": (prep_config(root, tmp_path / "scannet.zarr", scenes=_FIRST4), serial_cache)}
    for name, d in other_datasets.items():
        kw = dict(TINY, reader_options=d["reader_options"])
        serial = PrepConfig(
            dataset=name, root=str(d["root"]), out=str(tmp_path / f"{name}_s.zarr"), **kw
        )
        assert run_prep(serial, progress=False).exit_code == 0
        par = PrepConfig(
            dataset=name, root=str(d["root"]), out=str(tmp_path / f"{name}.zarr"), **kw
        )
        jobs[name] = (par, Path(serial.out))
    with DaskExecutor(2, memory_limit="2GB", echo=lambda s: None) as ex:  # one cluster for all
        for name, (config, reference) in jobs.items():
            report = run_prep(config, ex, progress=False)
            assert report.exit_code == 0 and report.done, (name, report.failed)
            # one teacher for the whole cluster (2 CPU workers), in its own process
            assert {r.teacher_builds for r in report.results} == {1}
            teacher_pids = {r.teacher_pid for r in report.results}
            assert len(teacher_pids) == 1 and not teacher_pids & {r.pid for r in report.results}
            assert os.getpid() not in {r.pid for r in report.results} | teacher_pids
            cache = Cache.open(config.out, read_only=True)
            assert cache.verify() == {s: [] for s in cache.scene_ids()}
            assert (
                sum(cache.scene_info(s)["counts"]["correspondences"] for s in cache.scene_ids()) > 0
            )
            assert_same_contents(contents(reference), contents(Path(config.out)))
        assert set(ex.client.run(_torch_threads).values()) == {1}  # the worker plugin ran
        assert len(ex.client.scheduler_info(n_workers=-1)["workers"]) == 3  # 2 CPU + teacher


def test_rerun_skips_complete_and_redoes_incomplete(dataset, serial_cache, tmp_path):
    import zarr

    root, _ = dataset
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_cache, out)
    before = {s: Cache.open(str(out)).scene_info(s)["info"]["run"] for s in _FIRST4}
    # an interrupted write: the group exists but was never marked complete
    group = zarr.open_group(str(out), path="scenes/scene0002_00", mode="r+")
    group.attrs["complete"] = False
    report = run_prep(prep_config(root, out, scenes=_FIRST4), progress=False)
    assert report.done == ["scene0002_00"] and sorted(report.skipped) == [
        "scene0000_00",
        "scene0001_00",
        "scene0003_00",
    ]
    cache = Cache.open(str(out), read_only=True)
    after = {s: cache.scene_info(s)["info"]["run"] for s in _FIRST4}
    assert after["scene0002_00"] != before["scene0002_00"]
    assert all(after[s] == before[s] for s in _FIRST4 if s != "scene0002_00")
    assert_same_contents(contents(serial_cache), contents(out))


def test_bad_scenes_are_listed_and_others_complete(dataset, tmp_path):
    root, _ = dataset
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    # 1: a truncated PLY; 2: every pose invalid; 3: cameras 1 km away (sees nothing)
    ply = bad / "scans/scene0001_00/scene0001_00_vh_clean_2.ply"
    ply.write_bytes(ply.read_bytes()[:900])
    for p in (bad / "scannet_frames_25k/scene0002_00/pose").iterdir():
        p.write_text("-inf -inf -inf -inf\n" * 4)
    for p in (bad / "scannet_frames_25k/scene0003_00/pose").iterdir():
        m = np.loadtxt(p)
        if np.isfinite(m).all():
            m[:3, 3] += 1000.0
            p.write_text("\n".join(" ".join(f"{v:f}" for v in row) for row in m) + "\n")
    out = tmp_path / "feats.zarr"
    report = run_prep(prep_config(bad, out, scenes=_FIRST4), progress=False, echo=lambda s: None)
    assert report.exit_code == 1 and report.done == ["scene0000_00"]
    reasons = {f["scene_id"]: f["reason"] for f in report.failed}
    assert sorted(reasons) == ["scene0001_00", "scene0002_00", "scene0003_00"]
    assert "scene0001_00_vh_clean_2.ply" in reasons["scene0001_00"]
    assert "no image" in reasons["scene0002_00"]
    assert "zero correspondences" in reasons["scene0003_00"]
    listed = json.loads(Path(str(out) + ".failures.json").read_text())
    assert {f["scene_id"]: f["reason"] for f in listed["failures"]} == reasons
    assert Cache.open(str(out)).scene_ids() == ["scene0000_00"]


def test_other_voxel_size_is_a_conflict_unless_overwrite(dataset, serial_cache, tmp_path):
    root, _ = dataset
    out = tmp_path / "c.zarr"
    shutil.copytree(serial_cache, out)
    with pytest.raises(CacheError, match="voxel_size"):
        run_prep(prep_config(root, out, scenes=_FIRST4[:1], voxel_size=0.05), progress=False)
    with pytest.raises(CacheError, match="reader"):
        opts = {"frames": "25k", "align": True}
        run_prep(prep_config(root, out, scenes=_FIRST4[:1], reader_options=opts), progress=False)
    r = run_prep(
        prep_config(root, out, scenes=_FIRST4[:1], voxel_size=0.05, overwrite=True),
        progress=False,
    )
    assert r.exit_code == 0 and Cache.open(str(out)).meta.voxel_size == 0.05
    assert Cache.open(str(out)).scene_ids() == ["scene0000_00"]


def _complete(url: Path) -> list[str]:
    try:
        return Cache.open(str(url), read_only=True).scene_ids()
    except CacheError:
        return []


def _prep_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tttkd.cli.prep", "scannet", "--root", str(root), "--cache",
        str(out), "--teacher", "test_vit_tiny", "--image-size", "28", "--frames", "25k",
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [(), ("--workers", "1", "--memory-limit", "2GB", "--images-per-task", "3")],
    ids=["serial", "cluster"],
)
def test_sigkill_then_rerun_redoes_nothing_complete(dataset, tmp_path, extra):
    """SIGKILL of the main process (with a cluster, its worker processes then die too, as a
    batch system kills a job), then a rerun: nothing complete is redone, nothing is lost."""
    import psutil

    root, _ = dataset
    out = tmp_path / "feats.zarr"
    cmd = _prep_cmd(root, out, *extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    children = []
    try:
        while not _complete(out):
            assert proc.poll() is None, f"prep ended before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no scene completed in time"
            time.sleep(0.01)
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        for c in children:
            c.kill()
    finally:
        proc.wait(timeout=60)
        psutil.wait_procs(children, timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    survived = _complete(out)
    assert 1 <= len(survived) < N_SCENES, "the kill must land mid-run"
    cache = Cache.open(str(out), read_only=True)
    stamps = {s: cache.scene_info(s)["info"]["run"] for s in survived}
    # the rerun is serial whatever the first run was (no second cluster start: CI time)
    rerun = subprocess.run(_prep_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    cache = Cache.open(str(out), read_only=True)
    assert len(cache.scene_ids()) == N_SCENES
    assert cache.verify() == {s: [] for s in cache.scene_ids()}
    assert {s: cache.scene_info(s)["info"]["run"] for s in survived} == stamps
    listed = json.loads(Path(str(out) + ".failures.json").read_text())
    assert listed["skipped"] == len(survived) and listed["done"] == N_SCENES - len(survived)
    assert listed["failures"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_external_dask_scheduler_and_worker_processes(dataset, serial_cache, tmp_path):
    root, _ = dataset
    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    sched = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers = []
    try:
        for resource in ("CPU=1", "GPU=1"):  # as the README tells users to start them
            workers.append(subprocess.Popen(
                [dask, "worker", addr, "--nworkers", "1", "--nthreads", "1", "--host",
                 "127.0.0.1", "--no-dashboard", "--memory-limit", "2GB", "--resources", resource],
                stdout=logs, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        from distributed import Client

        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        out = tmp_path / "ext.zarr"
        ex = DaskExecutor(scheduler=addr, echo=lambda s: None)
        report = run_prep(prep_config(root, out, scenes=_FIRST4), ex, progress=False)
        assert report.exit_code == 0, report.failed
        writers, teachers = {r.pid for r in report.results}, {r.teacher_pid for r in report.results}
        # CPU and write tasks on the CPU worker, the teacher on the GPU worker, built once
        assert len(writers) == 1 and len(teachers) == 1 and writers != teachers
        assert os.getpid() not in writers | teachers
        assert {r.teacher_builds for r in report.results} == {1}
        assert_same_contents(contents(serial_cache), contents(out))
    finally:
        for p in (*workers, sched):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        logs.close()


@pytest.mark.slow
def test_sigkill_of_cpu_and_teacher_workers_loses_nothing(dataset, serial_cache, tmp_path):
    """A CPU worker and the teacher worker are SIGKILLed mid-run: their nannies restart them,
    Dask recomputes what they held, every scene ends complete and equal to the serial run;
    a rerun then redoes nothing."""
    import threading

    root, _ = dataset
    out = tmp_path / "killed.zarr"
    # several teacher tasks to interrupt; at most 3 scenes in flight (partial tasks flushed)
    config = prep_config(root, out, images_per_task=4)
    killed: list[str] = []

    def killer(client) -> None:
        info = client.scheduler_info(n_workers=-1)["workers"]
        pids = client.run(os.getpid)
        role = {
            a: "teacher" if "GPU" in (w.get("resources") or {}) else "cpu" for a, w in info.items()
        }
        deadline = time.monotonic() + 240
        for want, after in (("teacher", 1), ("cpu", 3)):
            while len(_complete(out)) < after and time.monotonic() < deadline:
                time.sleep(0.01)
            addr = next(a for a, r in role.items() if r == want)
            os.kill(pids[addr], signal.SIGKILL)
            killed.append(f"{want} after {len(_complete(out))}")

    with DaskExecutor(1, memory_limit="2GB", window=3, echo=lambda s: None) as ex:
        thread = threading.Thread(target=killer, args=(ex.client,), daemon=True)
        thread.start()
        report = run_prep(config, ex, progress=False, echo=lambda s: None)
        thread.join(timeout=60)
    assert len(killed) == 2 and all(int(k.split()[-1]) < N_SCENES for k in killed), killed
    assert report.exit_code == 0, report.failed
    assert sorted(report.done + report.skipped) == sorted(
        f"scene{i:04d}_00" for i in range(N_SCENES)
    )
    cache = Cache.open(str(out), read_only=True)
    assert (
        cache.verify() == {s: [] for s in cache.scene_ids()} and len(cache.scene_ids()) == N_SCENES
    )
    got = contents(out)
    assert_same_contents(contents(serial_cache), {s: got[s] for s in _FIRST4})
    stamps = {s: cache.scene_info(s)["info"]["run"] for s in cache.scene_ids()}
    again = run_prep(config, progress=False, echo=lambda s: None)
    assert again.done == [] and len(again.skipped) == N_SCENES
    assert {s: cache.scene_info(s)["info"]["run"] for s in cache.scene_ids()} == stamps
