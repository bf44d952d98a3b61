"""Tests for cmmvt.selfsup: cross-modal self-supervised losses and k-means prototypes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmvt.features.cache import CacheReader, CacheWriter, ClipFeatures
from cmmvt.config import Params
from cmmvt.selfsup.objectives import sync_pairs
from cmmvt.selfsup import (
    Prototypes,
    clip_means,
    cluster_centroids,
    cluster_quality,
    cross_modal_cluster_ce,
    fit,
    kmeans,
    nt_xent,
    prototype_nce,
    read,
    synchrony_bce,
    write,
)

R2 = 1 / math.sqrt(2)


def _nll(pos: float, others: list[float], tau: float) -> float:
    """-log(exp(pos/τ) / (exp(pos/τ) + sum exp(o/τ))), written out."""
    num = math.exp(pos / tau)
    return -math.log(num / (num + sum(math.exp(o / tau) for o in others)))


# --------------------------------------------------------------------------------------------------------------
# NT-Xent


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Video a1=(1,0), a2=(0,1); audio b1=(3,3)→(1,1)/√2, b2=(0,-2)→(0,-1) (normalised inside the loss)."""
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[3.0, 3.0], [0.0, -2.0]])
    return z_a, z_b


def test_nt_xent_matches_hand_computed() -> None:
    tau = 0.5
    # cosines: a1·a2 = 0, a1·b1 = 1/√2, a1·b2 = 0, a2·b1 = 1/√2, a2·b2 = -1, b1·b2 = -1/√2
    l_a1 = _nll(R2, [0.0, 0.0], tau)  # positive b1; negatives a2, b2
    l_a2 = _nll(-1.0, [0.0, R2], tau)  # positive b2; negatives a1, b1
    l_b1 = _nll(R2, [R2, -R2], tau)  # positive a1; negatives a2, b2
    l_b2 = _nll(-1.0, [0.0, -R2], tau)  # positive a2; negatives a1, b1
    expected = (l_a1 + l_a2 + l_b1 + l_b2) / 4
    assert nt_xent(*_pairs(), temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_temperature_and_symmetry() -> None:
    eye = torch.eye(2)  # perfectly aligned, orthogonal pairs: l_i = log(1 + 2 exp(-1/τ))
    for tau in (0.1, 0.5, 1.0):
        expected = math.log(1 + 2 * math.exp(-1 / tau))
        assert nt_xent(eye, eye.clone(), tau).item() == pytest.approx(expected, rel=1e-3, abs=1e-6)  # float32
    assert nt_xent(eye, eye, 0.1) < nt_xent(eye, eye, 1.0)  # a lower τ sharpens: aligned pairs cost less
    z_a, z_b = _pairs()
    assert nt_xent(z_a, z_b, 0.5).item() != pytest.approx(nt_xent(z_a, z_b, 1.0).item())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(a, b, 0.2).item() == pytest.approx(nt_xent(b, a, 0.2).item(), rel=1e-6)
    assert nt_xent(a[:1], b[:1], 0.2).item() == pytest.approx(0.0, abs=1e-7)  # one pair: no negatives


def test_nt_xent_bad_inputs() -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError):
        nt_xent(torch.zeros(2, 3), torch.zeros(2, 3), valid=torch.ones(3, dtype=torch.bool))


# --------------------------------------------------------------------------------------------------------------
# XDC cross-entropy and ProtoNCE


def test_cross_modal_cluster_ce_matches_hand_computed() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])  # video head, 3 audio clusters
    audio_clusters = torch.tensor([2, 0])
    l0 = -math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)))
    l1 = -math.log(math.exp(0) / (math.exp(0) + math.exp(0) + math.exp(1)))
    assert cross_modal_cluster_ce(logits, audio_clusters).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # a clip without audio (pseudo label -1) is excluded like valid=False
    assert cross_modal_cluster_ce(logits, torch.tensor([2, -1])).item() == pytest.approx(l0, rel=1e-6)
    with pytest.raises(ValueError):
        cross_modal_cluster_ce(logits, torch.tensor([3, 0]))


def test_prototype_nce_matches_hand_computed() -> None:
    tau = 0.5
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # → (1,0), (0,1)
    protos = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])  # → (1,0), (0,1), (-1,-1)/√2
    assign = torch.tensor([0, 2])  # clip 1's other-modality cluster is 2
    l0 = _nll(1.0, [0.0, -R2], tau)  # cosines to prototypes 0 (positive), 1, 2
    l1 = _nll(-R2, [0.0, 1.0], tau)  # cosines to prototypes 2 (positive), 0, 1
    assert prototype_nce(z, protos, assign, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_synchrony_bce_matches_hand_computed() -> None:
    pos, neg = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 1.0, 4.0])
    sig = torch.sigmoid
    by_hand = 0.5 * (-(sig(pos[:2]).log()).mean() - (1 - sig(neg[:2])).log().mean())  # third row invalid
    got = synchrony_bce(pos, neg, valid=torch.tensor([True, True, False]))
    assert torch.allclose(got, by_hand)
    # confident and right → near 0; confident and wrong → large; no valid row → 0 with a graph
    assert synchrony_bce(torch.tensor([9.0]), torch.tensor([-9.0])) < 1e-3 < 5 < synchrony_bce(
        torch.tensor([-9.0]), torch.tensor([9.0]))
    x = torch.ones(2, requires_grad=True)
    zero = synchrony_bce(x, x, valid=torch.zeros(2, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0 and torch.equal(x.grad, torch.zeros(2))
    with pytest.raises(ValueError, match="both be"):
        synchrony_bce(torch.zeros(2), torch.zeros(3))


def test_sync_pairs_are_contiguous_windows_shifted_by_at_least_the_shift() -> None:
    B, T = 64, 16
    rows = torch.arange(T, dtype=torch.float32)[None, :, None].expand(B, T, 2)  # row index as the feature
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 9:] = False  # 9 real rows: windows of 9 − 2·2 = 5
    mask[2, 5:] = False  # 5 real rows: no room for a window of 2 rows
    batch = {"video": rows, "audio": rows + 100, "video_mask": mask, "audio_mask": mask.clone()}
    in_sync, shifted, valid = sync_pairs(batch, 2, torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, True, False] + [True] * (B - 3)
    assert in_sync["video_mask"].sum(1).tolist()[:3] == [12, 5, 0]
    v, a, s = (x[..., 0] for x in (in_sync["video"], in_sync["audio"], shifted["audio"]))  # (B, T)
    real = in_sync["video_mask"]
    steps = lambda x: (x[:, 1:] - x[:, :-1])[real[:, 1:]]  # noqa: E731
    assert (steps(v) == 1).all() and (steps(a) == 1).all() and (steps(s) == 1).all()  # contiguous, no seam
    assert torch.equal((a - 100)[real], v[real])  # in sync: the same rows
    lag = (s - 100 - v)[:, 0][valid]
    assert lag.abs().min() >= 2 and set(lag.tolist()) >= {-4.0, -2.0, 2.0, 4.0}  # both directions, ≥ 2 rows


def test_cluster_centroids() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0], [9.0, 9.0]])
    c, n = cluster_centroids(z, torch.tensor([0, 1, 1, -1]), k=3)
    assert torch.allclose(c, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert n.tolist() == [1, 2, 0]


# --------------------------------------------------------------------------------------------------------------
# masking: a clip without audio is excluded, not zero-filled


def test_clip_without_audio_changes_nothing_and_gets_no_gradient() -> None:
    z_a, z_b = _pairs()
    base = nt_xent(z_a, z_b, 0.5)
    za = torch.cat([z_a, torch.tensor([[0.3, -0.7]])]).requires_grad_()  # clip 3 has video …
    zb = torch.cat([z_b, torch.zeros(1, 2)]).requires_grad_()  # … but no audio (zero row)
    valid = torch.tensor([True, True, False])
    loss = nt_xent(za, zb, 0.5, valid=valid)
    assert loss.item() == pytest.approx(base.item(), rel=1e-6)
    loss.backward()
    assert torch.all(za.grad[2] == 0) and torch.all(zb.grad[2] == 0)
    assert za.grad[:2].abs().sum() > 0

    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [5.0, -5.0, 0.0]], requires_grad=True)
    labels = torch.tensor([2, 0, 1])
    ce = cross_modal_cluster_ce(logits, labels, valid=valid)
    assert ce.item() == pytest.approx(cross_modal_cluster_ce(logits[:2], labels[:2]).item(), rel=1e-6)
    ce.backward()
    assert torch.all(logits.grad[2] == 0)

    z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    protos = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
    pn = prototype_nce(z, protos, torch.tensor([0, 2, 1]), 0.5, valid=valid)
    assert pn.item() == pytest.approx(prototype_nce(z[:2], protos, torch.tensor([0, 2]), 0.5).item(), rel=1e-6)
    pn.backward()
    assert torch.all(z.grad[2] == 0)


def test_no_valid_pair_gives_zero_with_graph() -> None:
    za = torch.randn(3, 4, requires_grad=True)
    zb = torch.randn(3, 4, requires_grad=True)
    none = torch.zeros(3, dtype=torch.bool)
    for loss in (nt_xent(za, zb, 0.1, valid=none),
                 cross_modal_cluster_ce(za, torch.zeros(3, dtype=torch.long), valid=none),
                 prototype_nce(za, zb, torch.tensor([-1, -1, -1]), 0.1)):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
    assert torch.all(za.grad == 0) and torch.all(zb.grad == 0)


def test_nt_xent_decreases_when_training_linear_maps() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(32, 4, generator=g)  # shared latent content of 32 clips
    x_v = s @ torch.randn(4, 8, generator=g) + 0.05 * torch.randn(32, 8, generator=g)  # "video" features
    x_a = s @ torch.randn(4, 6, generator=g) + 0.05 * torch.randn(32, 6, generator=g)  # "audio" features
    torch.manual_seed(0)
    w_v = (0.3 * torch.randn(8, 4)).requires_grad_()  # tiny linear maps into a shared 4-d space
    w_a = (0.3 * torch.randn(6, 4)).requires_grad_()
    losses = []
    for _ in range(50):  # plain gradient descent (an optimizer's first step costs ~1 s of lazy imports)
        loss = nt_xent(x_v @ w_v, x_a @ w_a, temperature=0.2)
        loss.backward()
        with torch.no_grad():
            for w in (w_v, w_a):
                w -= 0.1 * w.grad
                w.grad = None
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


# --------------------------------------------------------------------------------------------------------------
# k-means prototypes

D = 4
CENTERS = 10.0 * np.eye(3, D, dtype=np.float32)  # 3 well-separated clusters


def _cache(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """features/{video,audio}: 12 clips, 4 per cluster, 3 rows each; clip c05 has no audio stream."""
    rng = np.random.default_rng(0)
    root = tmp_path / "features"
    truth = {}
    writers = {m: CacheWriter(root / m, m, {"backbone": "none", "dim": D}, shard_size=5) for m in ("video", "audio")}
    with writers["video"] as wv, writers["audio"] as wa:
        for i in range(12):
            vid, c = f"c{i:02d}", i % 3
            truth[vid] = c
            t = np.arange(3, dtype=np.float32) / 4
            wv.add(ClipFeatures(vid, CENTERS[c] + 0.1 * rng.standard_normal((3, D)), t, True, 0.75))
            if vid == "c05":
                wa.add(ClipFeatures(vid, np.zeros((0, D), np.float32), np.zeros(0, np.float32), False, 0.75))
            else:  # audio clusters permuted w.r.t. video ones: labels are arbitrary
                wa.add(ClipFeatures(vid, -CENTERS[(c + 1) % 3] + 0.1 * rng.standard_normal((3, D)), t, True, 0.75))
    return root, truth


def test_clip_means_skip_clips_without_stream(tmp_path: Path) -> None:
    root, _ = _cache(tmp_path)
    with CacheReader(root, "audio") as r:
        ids, X = clip_means(r, ["c00", "c05", "c01", "nope"])
        assert ids == ["c00", "c01"]
        assert X.dtype == np.float32 and X.shape == (2, D)
        np.testing.assert_allclose(X[0], r["c00"].mean(0), rtol=1e-6)
        ids_all, X_all = clip_means(r)
        assert len(ids_all) == 11 and "c05" not in ids_all and X_all.shape == (11, D)


def test_kmeans_deterministic_for_a_seed() -> None:
    X = np.random.default_rng(1).random((200, 5), dtype=np.float32)
    c1, a1, i1 = kmeans(X, 5, seed=0)
    c2, a2, i2 = kmeans(X, 5, seed=0)
    assert c1.dtype == np.float32 and c1.shape == (5, 5) and a1.dtype == np.int64 and a1.shape == (200,)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    assert i1 == i2 > 0
    others = [kmeans(X, 5, seed=s)[1] for s in (1, 2, 3)]  # unstructured data: seeds may differ
    assert any(not np.array_equal(a1, o) for o in others)
    m1, m2 = (kmeans(X, 5, seed=0, minibatch_threshold=50) for _ in range(2))  # MiniBatchKMeans path
    np.testing.assert_array_equal(m1[1], m2[1])
    with pytest.raises(ValueError):
        kmeans(X[:3], 5)


@pytest.mark.parametrize("frame_level,threshold", [(False, 20000), (True, 20000), (True, 5)])
def test_fit_recovers_clusters(tmp_path: Path, frame_level: bool, threshold: int) -> None:
    root, truth = _cache(tmp_path)
    res = fit(root, sorted(truth), k_video=3, k_audio=3, seed=0, frame_level=frame_level,
              minibatch_threshold=threshold, batch_rows=8)
    v, a = res["video"], res["audio"]
    assert v.ids == sorted(truth) and len(a.ids) == 11 and "c05" not in a.ids  # no audio stream: skipped
    for p in (v, a):
        q = cluster_quality(p.assignments, [truth[i] for i in p.ids])
        assert q["nmi"] == pytest.approx(1.0) and q["purity"] == 1.0
        assert p.centroids.shape == (3, D) and p.centroids.dtype == np.float32 and p.k == 3
        assert p.frame_level is frame_level and p.inertia > 0
    np.testing.assert_allclose(np.sort(np.abs(v.centroids).max(1)), [10, 10, 10], atol=0.2)
    assert a.labels_for(["c05", "c00"]).tolist() == [-1, a.assignments[a.ids.index("c00")]]
    assert v.feature_attrs["backbone"] == "none"


def test_fit_on_a_subset_streams_only_selected_clips(tmp_path: Path) -> None:
    root, truth = _cache(tmp_path)
    subset = [v for v in sorted(truth) if truth[v] != 2]  # two of the three clusters
    res = fit(root, subset, k_video=2, k_audio=2, seed=3, frame_level=True, minibatch_threshold=5, batch_rows=4)
    assert res["video"].ids == subset
    for p in res.values():
        assert cluster_quality(p.assignments, [truth[i] for i in p.ids]) == {"nmi": pytest.approx(1.0),
                                                                             "purity": 1.0}
    with pytest.raises(ValueError, match="audio"):
        fit(root, ["c00", "c05"], k_video=2, k_audio=2)  # one clip with audio, two clusters


def test_prototypes_roundtrip(tmp_path: Path) -> None:
    root, truth = _cache(tmp_path)
    res = fit(root, None, k_video=3, k_audio=2, seed=7)
    path = tmp_path / "data" / "prototypes.h5"
    write(path, res)
    back = read(path)
    assert list(back) == ["video", "audio"]
    for m in res:
        a, b = res[m], back[m]
        assert isinstance(b, Prototypes)
        np.testing.assert_array_equal(a.centroids, b.centroids)
        np.testing.assert_array_equal(a.assignments, b.assignments)
        assert (b.ids, b.k, b.inertia, b.frame_level, b.seed, b.modality, b.feature_attrs) == (
            a.ids, a.k, a.inertia, a.frame_level, a.seed, a.modality, a.feature_attrs)
    assert back["audio"].k == 2 and "c05" not in back["audio"].ids
    write(tmp_path / "again.h5", res)
    assert path.read_bytes() == (tmp_path / "again.h5").read_bytes()  # reproducible bytes
    assert not list(path.parent.glob("*.tmp"))


def test_cluster_quality_by_hand() -> None:
    q = cluster_quality([0, 0, 1, 1, 1], ["a", "a", "a", "b", "b"])
    assert q["purity"] == pytest.approx(4 / 5)  # cluster 0: 2 of a; cluster 1: 2 of b
    assert 0 < q["nmi"] < 1
    assert cluster_quality([2, 2, 0, 0], ["x", "x", "y", "y"]) == {"nmi": pytest.approx(1.0), "purity": 1.0}
    assert cluster_quality([0, 0, 0, 0], [0, 1, 0, 1])["purity"] == 0.5
    with pytest.raises(ValueError):
        cluster_quality([0, 1], [0])


def test_prototype_params_defaults() -> None:
    p = Params().prototypes
    assert (p.k_video, p.k_audio, p.frame_level, p.minibatch_threshold) == (10, 10, False, 20000)


def test_variance_floor_is_high_for_a_collapsed_batch_and_zero_for_a_spread_one():
    import torch

    from cmmvt.selfsup.losses import variance_floor

    same = torch.ones(8, 4).requires_grad_()
    assert variance_floor(same).item() == pytest.approx(1 - 0.01, abs=1e-4)  # sqrt(eps) = 0.01
    variance_floor(same).backward()
    spread = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 3
    assert variance_floor(spread).item() == 0
    assert variance_floor(torch.ones(1, 4)).item() == 0  # one clip: no spread to measure
