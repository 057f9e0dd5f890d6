"""Measure the masked-token prior against the PixelCNN and the nearest-neighbour answers (issue 21).

Quick profile (``--profile``), k=512, on validation images (``test_pairs("fashion-mnist", n, 1).targets``):

1. the masked prior's test pseudo-NLL per position beside the PixelCNN's test NLL (both on the
   same first test grids, and the PixelCNN's cached figure on every test grid);
2. per inpainting mask (bottom-half, centre-square, random-half, and a hidden left half): the
   hidden-pixel MSE, PSNR, hidden-region SSIM and class consistency of
   (a) the best of S masked-prior completions by visible loss, (b) the mean of the S decoded
   completions, (c) ``guided_search`` (PixelCNN energy, weight 0.003) started from those
   completions, and for comparison the PixelCNN's own best draw and guided search (with
   ``--pixelcnn``), the nearest training image, the 10-NN mean and the oracle (the truth's code).

Needs the quick VQ-VAE and PixelCNN in the cache; trains (and caches) the quick masked prior and
classifier if absent. Usage::

    nice -n 10 python scripts/measure_masked_prior.py [--images 24] [--samples 32] [--pixelcnn]
"""

from __future__ import annotations

import argparse
import time

import torch

from vqtto import cache as artifacts, data, models, tasks
from vqtto.tasks import baselines as anchors
from vqtto.models import masked as masked_prior, pixelcnn
from vqtto.data import pairs
from vqtto.tasks import completion as cm
from vqtto.tasks.guided import draw_losses, guided_search


def _decode(model, grids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(model.lookup(grids)).clamp(0, 1)


def _scores(task, clf, labels, images) -> dict[str, torch.Tensor]:
    hidden = task.measured
    agree, conf = cm.class_consistency(clf, images, labels)
    return {"mse": tasks.measure(task, images)["mse"], "psnr": cm.hidden_psnr(images, task.truth, hidden),
            "ssim": cm.hidden_ssim(images, task.truth, hidden), "class": agree.float(), "conf": conf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24, help="validation images")
    ap.add_argument("--samples", type=int, default=32, help="masked-prior completions per image")
    ap.add_argument("--steps", type=int, default=8, help="decoding rounds of a completion")
    ap.add_argument("--weight", type=float, default=0.003, help="lambda of the guided search")
    ap.add_argument("--score", type=int, default=500, help="test grids for the NLL comparison")
    ap.add_argument("--pixelcnn", action="store_true", help="also the PixelCNN's draws and guided search")
    ap.add_argument("--no-pixelcnn", action="store_true", help="leave out everything that needs the PixelCNN "
                    "(its NLL and the guided search), e.g. while it is not trained yet")
    ap.add_argument("--profile", default="quick", help="model profile (smoke: a dry run in seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    vq = models.vqvae("fashion-mnist", 512, args.profile, device="cpu")
    if args.profile != "smoke" and not args.no_pixelcnn and not artifacts.path_for("pixelcnn", models.prior_config(vq.config, args.profile)).exists():
        raise SystemExit(f"the {args.profile} PixelCNN (k=512) is not in the cache yet: train it first with "
                         f"models.prior('fashion-mnist', 512, {args.profile!r})")
    pix = None if args.no_pixelcnn else models.prior("fashion-mnist", 512, args.profile, device="cpu")
    mpr = masked_prior.masked_prior("fashion-mnist", 512, args.profile, device="cpu")
    clf = cm.classifier("fashion-mnist", args.profile, device="cpu")
    model = vq.model

    test_grids = mpr.test_codes.indices[: args.score]
    print(f"priors (nats per position, first {args.score} test grids):")
    print(f"  masked prior pseudo-NLL {float(masked_prior.pseudo_nll(mpr, test_grids).mean()):.3f}"
          f"  (cached: {mpr.test['pseudo_nats_per_position']:.3f} on its first {mpr.config['train']['score_limit']})")
    if pix is not None:
        print(f"  PixelCNN NLL            {pixelcnn.evaluate(pix.model, test_grids, None, torch.device('cpu'))['nats_per_position']:.3f}"
              f"  (cached, every test grid: {pix.test['nats_per_position']:.3f})")
    print(f"  uniform                 {mpr.test['uniform_nats']:.3f}")
    print(f"classifier test accuracy {clf.test['accuracy']:.4f}")

    val = pairs.test_pairs("fashion-mnist", args.images, 1)
    truth = val.targets
    labels = data.load("fashion-mnist", "test").labels[val.target_ids]
    train = data.load("fashion-mnist", "train").images
    grid = tuple(test_grids.shape[1:])
    fields = tasks.receptive_fields(model, grid)
    left = torch.zeros(28, 28, dtype=torch.bool)
    left[:, :14] = True
    rows = []
    for mask in ("bottom-half", "centre-square", "random-half", left):
        task = tasks.inpainting(truth, mask, model, fields=fields)
        start = anchors.encoder_grids(model, task.observed)
        draws = masked_prior.complete(mpr, start, task.movable, samples=args.samples, steps=args.steps, seed=0)
        losses = draw_losses(model, task, draws)
        b = truth.shape[0]
        decoded = _decode(model, draws.flatten(0, 1)).view(b, args.samples, *truth.shape[1:])
        nb = anchors.nearest_training(task, train, 10)
        nearest, knn = anchors.neighbour_answers(train, nb)
        answers = {"masked best-of-S": decoded[torch.arange(b), losses.argmin(1)], "masked mean-of-S": decoded.mean(1)}
        if pix is not None:
            guided = guided_search(model, pix.model, task, start, weight=args.weight, draws=draws, seed=0)
            answers["masked + guided"] = _decode(model, guided.grids)
        if pix is not None and args.pixelcnn:
            pg = guided_search(model, pix.model, task, start, weight=args.weight, samples=args.samples, seed=0)
            answers["PixelCNN best-of-S"] = _decode(model, pg.draw_best)
            answers["PixelCNN + guided"] = _decode(model, pg.grids)
        answers.update({"nearest training": nearest, "10-NN mean": knn,
                        "oracle code": _decode(model, anchors.encoder_grids(model, truth))})
        scores = {name: _scores(task, clf, labels, images) for name, images in answers.items()}
        for name, s in scores.items():
            beats_nn = float((s["mse"] < scores["nearest training"]["mse"]).float().mean())
            beats_knn = float((s["mse"] < scores["10-NN mean"]["mse"]).float().mean())
            rows.append((task.name if isinstance(mask, str) else "inpainting, left-half", name,
                         *(float(s[key].mean()) for key in ("mse", "psnr", "ssim", "class", "conf")), beats_nn, beats_knn))
    print(f"\n{args.images} validation images, S={args.samples} completions, {args.steps} rounds, lambda={args.weight}")
    head = ("task", "answer", "hidden MSE", "PSNR dB", "SSIM", "class ok", "conf", "<NN", "<10NN")
    print(f"{head[0]:<28}{head[1]:<20}" + "".join(f"{h:>11}" for h in head[2:]))
    for r in rows:
        print(f"{r[0]:<28}{r[1]:<20}" + "".join(f"{v:>11.4f}" for v in r[2:]))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
