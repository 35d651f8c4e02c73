"""Real-time stage: takes the pending marks that intake leaves, hands claimed requests to sending.

- `flush`: the real-time path, step by step (its docstring lists them), and the flush itself;
- `scheduling`: one queued flush per destination, and wake-up timers;
- `slots`: per-destination concurrency slots in Redis;
- `claiming`: who is due, claim them, pack their requests;
- `user_objects`: what a claimed device lists;
- `recording`: a claim's deliveries, the devices they carry, and the holds.
"""
