"""`evfarm arena`: serve a K-Sort arena over a models folder, export / import its votes, make samples.

    evfarm arena serve --models FOLDER [--k 4] [--port 8000] [--host 127.0.0.1] [--store DIR]
    evfarm arena export --store DIR --out votes.parquet
    evfarm arena import --store DIR votes.parquet [more.parquet ...]
    evfarm arena samples --out FOLDER [--configs fp,w8a8,w4a4,cached5] [--seeds 8] [--procedural]

`serve` binds 127.0.0.1 unless `--allow-remote` is given with another `--host` (put a TLS reverse
proxy in front then); `--port 0` takes a free port. It prints `arena listening on http://HOST:PORT`
once the socket is bound, then the admin token's location. The store folder defaults to
`results/arena/<models folder name>`; nothing is written anywhere else. `samples` writes
`FOLDER/<configuration>/seed<NNNN>.png` from the CacheQuant grid's pipeline (actors/arena_samples.py)
or, with `--procedural`, a model-free demo world (sims/arena_images.py). Bad input exits 2.
Our own design [ours]; the main CLI (`cluster/cli.py`) mounts `add_parser` and dispatches to `run`.
"""
from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from methods.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("arena", help="K-Sort arena web app: serve, export, import, samples",
                                   description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="arena_action", required=True,
                                    metavar="{serve,export,import,samples}")
    serve = actions.add_parser("serve", help="the voting page, leaderboard and JSON API")
    serve.add_argument("--models", required=True, type=Path, help="folder laid out <model>/<prompt_id>.png")
    serve.add_argument("--k", type=int, default=4, help="models shown per vote (the paper's K, default 4)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port; 0 = a free one")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    serve.add_argument("--store", type=Path, default=None, help="vote store folder")
    serve.add_argument("--rate-limit", type=int, default=30, help="votes per session per --rate-window")
    serve.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    serve.add_argument("--bootstrap-rounds", type=int, default=200)
    serve.add_argument("--seed", type=int, default=0, help="matchmaking tie-breaks and prompt draws")
    exp = actions.add_parser("export", help="write a store's votes as Parquet")
    exp.add_argument("--store", required=True, type=Path)
    exp.add_argument("--out", required=True, type=Path)
    imp = actions.add_parser("import", help="replay Parquet votes into a store (each token counts once)")
    imp.add_argument("--store", required=True, type=Path)
    imp.add_argument("files", nargs="+", type=Path)
    smp = actions.add_parser("samples", help="write a models folder from the farm's own generators")
    smp.add_argument("--out", required=True, type=Path)
    smp.add_argument("--configs", default="fp,w8a8,w4a4,cached5,cachequant-w8a8-n5",
                     help="comma-separated CacheQuant configurations (actors/arena_samples.PRESETS)")
    smp.add_argument("--seeds", type=int, default=8, help="noise seeds 0..N-1, one prompt id each")
    smp.add_argument("--steps", type=int, default=20)
    smp.add_argument("--model", default="auto", help="'auto' = the zoo's ddpm-digits, or a diffusers folder")
    smp.add_argument("--procedural", action="store_true", help="a model-free demo world instead")
    return parser


def default_store(models: Path) -> Path:
    return Path("results") / "arena" / models.resolve().name


def _bind(host: str, port: int, allow_remote: bool) -> socket.socket:
    from cluster.security import is_loopback

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve ({exc}); use 127.0.0.1.") from exc
    family, _, _, _, addr = infos[0]
    if not is_loopback(addr[0]) and not allow_remote:
        raise ConfigError(f"--host {host!r} is not a loopback address; the arena binds 127.0.0.1 by "
                          f"default. To serve other machines put a TLS reverse proxy in front, or pass "
                          f"--allow-remote.")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {port}.")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit TCP_NODELAY on Linux: without it a keep-alive client waits ~40 ms per
    # response (Nagle against delayed ACK; measured 48 ms vs 7 ms per GET /api/match)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)  # listening before "arena listening" is printed: early clients queue, not fail
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot bind {host}:{port} ({exc}); pick another --port (0 = any free).") from exc
    return sock


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cluster.arena_app import Arena, ArenaAppConfig, create_app

    cfg = ArenaAppConfig(k=args.k, rate_limit=args.rate_limit, rate_window_s=args.rate_window,
                         bootstrap_rounds=args.bootstrap_rounds, seed=args.seed)
    store = args.store or default_store(args.models)
    arena = Arena(args.models, store, cfg)
    sock = _bind(args.host, args.port, args.allow_remote)
    host, port = sock.getsockname()[:2]
    print(f"arena: {len(arena.catalogue)} models, {len(arena.prompts)} prompts, K={cfg.k}, "
          f"{arena.replayed} votes replayed from {arena.store.path}", flush=True)
    print(f"admin token: $EVFARM_ARENA_ADMIN_TOKEN or {arena.store.folder / 'admin_token'}", flush=True)
    print(f"arena listening on http://{host}:{port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(arena), log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


def run(args: argparse.Namespace) -> int:
    from cluster.arena_store import ArenaStore

    if args.arena_action == "serve":
        return serve(args)
    if args.arena_action == "export":
        if not (args.store / "arena.sqlite").is_file():
            raise ConfigError(f"{args.store} holds no arena store (arena.sqlite); pass the --store of "
                              f"a server.")
        n = ArenaStore(args.store).export_parquet(args.out)
        print(f"exported {n} votes to {args.out}")
        return 0
    if args.arena_action == "import":
        store = ArenaStore(args.store)
        for f in args.files:
            added, present = store.import_parquet(f)
            print(f"{f}: {added} votes added, {present} already present")
        print(f"store {args.store}: {store.count()} votes")
        return 0
    return _samples(args)


def _samples(args: argparse.Namespace) -> int:
    from sims.arena_images import procedural_images, write_folder

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be ≥ 1, got {args.seeds}.")
    if args.procedural:
        paths = write_folder(args.out, procedural_images(n_prompts=args.seeds), upscale=3)
        print(f"wrote {len(paths)} procedural images to {args.out}")
        return 0
    from actors.arena_samples import preset_points, write_cachequant_samples

    points = preset_points([c.strip() for c in args.configs.split(",") if c.strip()])
    counts = write_cachequant_samples(args.out, points, list(range(args.seeds)), steps=args.steps,
                                      model=args.model)
    print(f"wrote {sum(counts.values())} samples of {len(counts)} configurations to {args.out}")
    return 0

