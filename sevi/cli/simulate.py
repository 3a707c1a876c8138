"""`sevi simulate`: render accumulated detector images for given or random parameters.

Input (``--truth``): a table 'Truth' with ImageId '<i4', SphereId '<u1', R '<f8', sigma_R '<f8',
n_electrons '<i8', beta '<f8' (L): the course's Truth table plus two fields, two rows per image.
With ``--random N`` the parameters are drawn from the default prior and that table is written
beside the images.

Output: dataset ``image_id`` (n,) int32, dataset ``counts`` (n, G, G) int32 electron counts per
pixel (axis 0 = x, axis 1 = z), ``out_of_view`` (n,) electrons that missed the field of view, the
``Truth`` table, and attributes naming the seed, grid, device, generator settings and ``render``.
With ``--render expected`` the image dataset is ``expected`` (n, G, G) float64, the exact expected
counts per pixel (sevi/physics/forward.py), in the same layout; ``--render poisson`` draws ``counts`` from
it (sevi/physics/expected_renderer.py). Both need an even grid and 10 sigma_R <= R < 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

MAX_GRID = 8192  # pixels per side: 8x the camera's 1024; one image of counts is 256 MiB there


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="render accumulated SEVI images (counts) for given or random parameters",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--truth", help="HDF5 file with a 'Truth' table (two rows per image)")
    src.add_argument("--random", type=int, metavar="N", help="draw N parameter sets from the default prior")
    p.add_argument("--out", required=True, help="output HDF5 file (written atomically)")
    p.add_argument("--grid", type=int, default=1024, help="pixels per side G (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:k] (default auto)")
    p.add_argument("--electrons", type=int, default=None,
                   help="with --random: electrons per shell (default: the prior's 1.8-2.5 million)")
    p.add_argument("--batch", type=int, default=8, help="images rendered at a time (default 8)")
    p.add_argument("--render", default="itm", choices=("itm", "poisson", "expected"),
                   help="itm: sample every electron (default, the reference); poisson: Poisson counts per pixel "
                        "around the exact expected image (same distribution, cost set by the pixels); expected: "
                        "the expected image itself, dataset 'expected' (n, G, G) float64")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from sevi.io import tables as io
    from sevi.io.paths import check_outputs
    from sevi.io.write_behind import WriteBehind
    from sevi.physics.generator import GeneratorConfig
    from sevi.physics.prior import PriorConfig, ShellParams
    from sevi.runtime.errors import InputError

    check_outputs({"--out": args.out}, {"--truth": args.truth})
    if args.batch < 1:
        raise InputError(f"--batch must be >= 1 (images rendered at a time), got {args.batch}")
    if not 2 <= args.grid <= MAX_GRID:
        raise InputError(f"--grid: got {args.grid}; expected 2..{MAX_GRID} pixels per side (an image of "
                         f"{MAX_GRID}^2 counts is {MAX_GRID**2 * 4 / 2**20:.0f} MiB; the camera has 1024)")
    if args.electrons is not None and args.electrons < 1:
        raise SystemExit(f"sevi simulate: --electrons: got {args.electrons}; expected >= 1 electron per shell")
    if args.grid % 2:  # allowed (PyAbel likes odd grids), but no sevi model reads it: they rebin to an even grid
        print(f"sevi simulate: warning: --grid {args.grid} is odd; sevi models read only grids that are a "
              f"multiple of their (even) training grid", file=sys.stderr)
    prior_config = PriorConfig()
    if args.electrons is not None:
        prior_config = prior_config.with_electrons(args.electrons)
    if args.truth:
        rows = io.read_sim_truth(args.truth)
        for line in io.truth_warnings(rows, args.truth):
            print(f"sevi simulate: warning: {line}", file=sys.stderr)
        t = io.truth_to_arrays(rows)
        params = ShellParams(*(torch.as_tensor(np.ascontiguousarray(t[k])) for k in ("R", "sigma_R", "beta", "n_electrons")))
        image_ids = t["image_ids"]
        from sevi.physics.legendre import ValidityCheck
        valid = ValidityCheck(params.beta.shape[-1])(params.beta)  # (n, 2)
        if not bool(valid.all()):
            i, j = map(int, (~valid).nonzero()[0])
            raise SystemExit(f"sevi simulate: {args.truth}: Truth row ImageId {image_ids[i]}, SphereId {j}: its beta "
                             f"give an angular density I(x) < 0 somewhere on [-1, 1], which is not a distribution")
    else:
        if args.random < 1:
            raise SystemExit("sevi simulate: --random N needs N >= 1")
        from sevi.physics.prior import Prior
        params = Prior(prior_config)(args.random, args.seed).params
        image_ids = np.arange(args.random, dtype=np.int32)

    if args.render != "itm":
        if args.grid % 2:
            raise SystemExit(f"sevi simulate: --render {args.render} needs an even --grid, got {args.grid}")
        from sevi.physics.forward import check_params
        try:
            check_params(params.R, params.sigma_R, where=args.truth or "the drawn parameters")
        except ValueError as e:
            raise SystemExit(f"sevi simulate: {e}") from None
    if args.render == "expected":
        from sevi.physics.forward import ExpectedImage, ForwardConfig
        gen = ExpectedImage(ForwardConfig(grid=args.grid, n_terms=params.beta.shape[-1]), args.device)
    else:
        from sevi.physics.expected_renderer import make_renderer
        gen = make_renderer(args.render, GeneratorConfig(grid=args.grid), args.device, prior_config)
    n = len(params)
    out_of_view = np.zeros(n, np.int64)
    truth = io.sim_truth_rows(image_ids, params.R.numpy(), params.sigma_R.numpy(), params.n_electrons.numpy(),
                              params.beta.numpy())
    # Streamed: the counts dataset is created with its final shape and filled batch by batch, so
    # memory is one batch of images whatever N (the file is renamed into place at the end). Every
    # dataset is held until the file is flushed (sevi.io.tables.atomic_h5: a full disk is then
    # one line, not a crash).
    # The batch's write runs behind the next batch's render (sevi.io.write_behind: in order, one at
    # a time, its errors raised here).
    with io.atomic_h5(args.out, stream=True) as f, tqdm(total=n, unit="image", desc="sevi simulate", disable=None) as bar:
        name, dtype = ("expected", np.float64) if args.render == "expected" else ("counts", np.int32)
        counts = f.create_dataset(name, shape=(n, args.grid, args.grid), dtype=dtype, chunks=(1, args.grid, args.grid))
        with WriteBehind() as writes:
            for start in range(0, n, args.batch):
                part = params[start:start + args.batch]
                rows = slice(start, start + len(part))
                if args.render == "expected":  # no noise: the mean of what the other backends draw
                    mu = gen(part, check=False)
                    writes.submit(counts.__setitem__, rows, mu.cpu().numpy())
                    out_of_view[rows] = (part.n_electrons.sum(1).double() - mu.sum(dim=(1, 2)).cpu()).round().numpy()
                else:
                    # One seed per batch, derived from the run's seed, so a batch can be re-rendered alone.
                    res = gen.render(part, seed=args.seed * 1_000_003 + start)
                    writes.submit(counts.__setitem__, rows, res.images.cpu().numpy())
                    out_of_view[rows] = res.out_of_view.cpu().numpy()
                bar.update(len(part))
        _held = [f.create_dataset("image_id", data=image_ids), f.create_dataset("out_of_view", data=out_of_view),
                f.create_dataset("Truth", data=truth)]
        f.attrs.update({"seed": args.seed, "grid": args.grid, "device": str(gen.device),
                        "generator_config": json.dumps(dataclasses.asdict(gen.config)), "render": args.render,
                        "axes": f"{name}[image, x, z]; x and z from -1 to +1"})
    lost = int(out_of_view.sum())
    print(f"wrote {n} images of {args.grid}x{args.grid} to {args.out}"
          + (f" ({lost} electrons fell outside the field of view; see 'out_of_view')" if lost else ""))
    return 0
