"""The simulated fleet: virtual SMIBs that speak PROTOCOL.md on a real broker.

- `meters`: a slot machine's SAS meters advanced by elapsed time (pure; also for
  generating history offline: `Machine.from_seed`, `Machine.advance`, `history`).
- `frames`: what a board reads and writes (6F poll decoding, JSON, spoiled messages,
  event episodes) (pure).
- `board`: one board's state machine, command in, effects out (pure); `make_boards`.
- `scheduler`: one thread running delayed callbacks from a heap.
- `fleet`: `Fleet`, the boards behind one paho client (the only module doing I/O).

Nothing is imported here, so the pure modules stay free of paho: import from the
module itself (`from smib_core.sim.fleet import Fleet`).
"""
