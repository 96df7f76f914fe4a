"""Detector components: model sizes, NMS against brute force, assigner, loss, COCO evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lensforge.detect.assign import task_aligned_assign
from lensforge.detect.boxops import aligned_iou, box_iou, dfl_expectation, make_anchors
from lensforge.detect.cocoeval import (ImageTruth, confusion_matrix, evaluate, ground_truth_json, predictions_json,
                                       pycocotools_score)
from lensforge.detect.flops import count_flops, count_params
from lensforge.detect.loss import DetectionLoss
from lensforge.detect.nms import batched_nms, decode, postprocess
from lensforge.models import create_model


def brute_nms(boxes, scores, classes, thr):
    """Reference: per class, repeatedly take the best remaining box and delete all overlapping it."""
    keep = []
    for c in set(classes.tolist()):
        idx = [i for i in range(len(boxes)) if classes[i] == c]
        while idx:
            best = max(idx, key=lambda i: (scores[i].item(), -i))
            keep.append(best)
            idx = [i for i in idx if i != best and box_iou(boxes[best:best + 1], boxes[i:i + 1]).item() <= thr]
    return sorted(keep)


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 120
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 3, (n,), generator=g)
    for thr in (0.3, 0.5, 0.7):
        got = batched_nms(boxes, scores, classes, thr)
        assert sorted(got.tolist()) == brute_nms(boxes, scores, classes, thr)
        assert (scores[got].diff() <= 0).all()  # best first


def test_nms_keeps_other_class_on_same_box():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10.]])
    got = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert got.tolist() == [0, 1]


def test_ciou_and_giou_properties():
    a = torch.tensor([[0, 0, 10, 10.]])
    assert aligned_iou(a, a, "ciou").item() == pytest.approx(1, abs=1e-5)
    far = torch.tensor([[20, 20, 30, 30.]])
    assert aligned_iou(a, far, "giou").item() < 0 and aligned_iou(a, far, "ciou").item() < 0
    assert aligned_iou(a, torch.tensor([[0, 0, 10, 20.]]), "iou").item() == pytest.approx(0.5)


def test_model_sizes_match_their_yolov8_counterparts():
    # YOLOv8 n/s/m at 80 classes, 640 px: 3.16M/8.7G, 11.17M/28.6G, 25.9M/78.9G
    expect = {"det-n": (3.157, 8.74), "det-s": (11.17, 28.6), "det-m": (25.90, 78.9)}
    for name, (p, f) in expect.items():
        m = create_model(name, num_classes=80)
        assert count_params(m) / 1e6 == pytest.approx(p, rel=0.005)
        assert count_flops(m, 640, 640) / 1e9 == pytest.approx(f, rel=0.005)


def test_forward_shapes_and_decode():
    m = create_model("det-n", num_classes=3).eval()
    out = m(torch.rand(2, 3, 96, 128))
    assert [o.shape[-2:] for o in out] == [(12, 16), (6, 8), (3, 4)] and out[0].shape[1] == 64 + 3
    boxes, probs = decode(out, 3, 16, (8, 16, 32))
    assert boxes.shape == (2, 12 * 16 + 6 * 8 + 12, 4) and probs.shape[-1] == 3
    assert (boxes[..., 2:] >= boxes[..., :2]).all()


def test_dfl_expectation_and_anchor_grid():
    logits = torch.full((1, 64), -30.0)
    logits[0, [3, 16 + 5, 32 + 0, 48 + 15]] = 30.0
    assert torch.allclose(dfl_expectation(logits, 16), torch.tensor([[3.0, 5, 0, 15]]), atol=1e-5)
    pts, s = make_anchors([torch.zeros(1, 1, 2, 3)], [8])
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]] and (s == 8).all()


def test_assigner_picks_anchors_inside_best_aligned():
    pts, _ = make_anchors([torch.zeros(1, 1, 8, 8)], [8])  # 64 points over 64 x 64
    a = len(pts)
    gt = torch.tensor([[[8, 8, 40, 40.], [0, 0, 0, 0]]])
    pred = torch.cat([pts - 10, pts + 10], 1)[None]  # 20 px boxes at every point
    scores = torch.full((1, a, 2), 0.5)
    tb, ts, fg, gi = task_aligned_assign(scores, pred, pts, torch.tensor([[1, -1]]), gt,
                                         torch.tensor([[True, False]]), topk=5)
    assert fg.sum() == 5
    inside = ((pts > 8) & (pts < 40)).all(1)
    assert inside[fg[0]].all()
    assert (tb[0, fg[0]] == gt[0, 0]).all() and (ts[0, fg[0], 1] > 0).all() and (ts[0, :, 0] == 0).all()
    assert ts.max() <= 1


def test_loss_falls_when_fitting_one_image():
    torch.manual_seed(0)
    m = create_model("det-n", num_classes=2)
    crit = DetectionLoss(2, 16, m.strides)
    x = torch.rand(1, 3, 64, 64)
    t = torch.tensor([[0, 0, 8, 8, 40, 30.], [0, 1, 30, 36, 60, 62]])
    opt = torch.optim.AdamW(m.parameters(), 2e-3)
    losses = []
    for _ in range(25):
        loss, parts = crit(m(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"loss", "box", "cls", "dfl"}
    assert losses[-1] < 0.5 * losses[0]
    # a box far larger than 15 bins x stride (a WBC filling the image) saturates the DFL target
    loss, _ = crit(m(x), torch.tensor([[0, 2 % 2, 0, 0, 64, 64.]]))
    assert torch.isfinite(loss)
    big = DetectionLoss(2, 16, m.strides)(m(torch.rand(1, 3, 320, 320)), torch.tensor([[0, 0, 2, 2, 318, 318.]]))[0]
    assert torch.isfinite(big)
    # an image without boxes is valid: only the classification term remains
    loss, parts = crit(m(x), torch.zeros((0, 6)))
    assert float(parts["box"]) == 0 and torch.isfinite(loss)


def test_coco_eval_agrees_with_pycocotools_and_confusion(tmp_path):
    rng = np.random.default_rng(0)
    truths, dets = [], []
    for i in range(12):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 120, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 3, n)
        truths.append(ImageTruth(f"{i}.jpg", 320, 320, boxes, labels))
        jitter = boxes + rng.normal(0, 4, boxes.shape)
        d = np.concatenate([jitter, rng.uniform(0.3, 1, (n, 1)), labels[:, None]], 1)
        fp = np.array([[10, 10, 60, 60, 0.4, rng.integers(0, 3)]])
        dets.append(np.concatenate([d, fp]))
    gt = ground_truth_json(truths, ["a", "b", "c"])
    preds = predictions_json(dets)
    res = evaluate(gt, preds, ["a", "b", "c"])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    m5095, m50 = pycocotools_score(tmp_path / "gt.json", tmp_path / "pred.json")
    assert 0.3 < res["map50"] < 1
    assert res["map50"] == pytest.approx(m50, abs=5e-4) and res["map50_95"] == pytest.approx(m5095, abs=5e-4)
    assert res["map50"] == pytest.approx(np.mean(list(res["ap50"].values())), abs=1e-6)
    cm = confusion_matrix(truths, dets, 3)
    n_true = sum(len(t.labels) for t in truths)
    assert cm[:3, :].sum() == n_true and cm.trace() > 0.8 * n_true and cm[3, :3].sum() >= 12 - 3


def test_evaluate_without_predictions_is_zero():
    gt = ground_truth_json([ImageTruth("a.jpg", 10, 10, np.array([[1, 1, 5, 5.]]), np.array([0]))], ["a"])
    assert evaluate(gt, [], ["a"])["map50"] == 0.0


def test_postprocess_thresholds_and_multilabel():
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60]]])
    probs = torch.tensor([[[0.9, 0.6], [0.8, 0.1], [0.05, 0.3]]])
    single = postprocess(boxes, probs, conf=0.25, iou=0.5)[0]
    assert single[:, 4].tolist() == pytest.approx([0.9, 0.3]) and single[:, 5].tolist() == [0, 1]
    multi = postprocess(boxes, probs, conf=0.25, iou=0.5, multi_label=True)[0]
    assert sorted(multi[:, 4].tolist()) == pytest.approx([0.3, 0.6, 0.9])


SQUEEZE = __import__("conftest").SHARED.parent / "weights" / "squeezenet1_1-features-caffe.pth"


@pytest.mark.skipif(not SQUEEZE.exists(), reason="shared SqueezeNet weights absent")
def test_squeezenet_backbone_starts_from_imagenet_weights():
    from lensforge.models.features import load_feature_net

    ref = load_feature_net(SQUEEZE)
    m = create_model("det-sq", num_classes=3, backbone_weights=str(SQUEEZE)).eval()
    # Caffe weights read BGR: the first conv takes RGB with its input channels flipped once
    assert torch.equal(m.backbone.to8[0].weight, ref.features[0].weight.flip(1))
    assert torch.equal(m.backbone.to16[-1].expand3x3.weight, ref.features[12].expand3x3.weight)
    # same stride-8 activations as the reference network on the same RGB image
    x = torch.rand(1, 3, 64, 64)
    ours = m.backbone.to8((x - m.mean) / m.std)
    theirs = ref(x, (7,))[7]
    assert torch.allclose(ours, theirs, atol=1e-3)
    assert create_model("det-sq", num_classes=3).backbone.to8[0].weight.abs().sum() != m.backbone.to8[0].weight.abs().sum()
