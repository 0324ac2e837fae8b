"""Batches built ahead of the loop: a background thread makes the batches of the coming steps and sends them to
the devices while the devices run the current step. A batch is a function of its step alone, so the batches are
the same as built in the loop, only earlier; the compiled data path (numba) releases the GIL while it works."""

import queue
import threading


class Prefetcher:
    """Batches `make(step)` for steps `start`, `start + 1`, ..., at most `depth` ahead of `get`."""

    def __init__(self, make, start: int, depth: int):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(make, start), daemon=True, name="jaxbert-feed")
        self._thread.start()

    def _work(self, make, step: int) -> None:
        try:
            while not self._stop.is_set():
                item = (step, make(step))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                step += 1
        except BaseException as e:  # handed to the loop, which raises it at the step that needed the batch
            self._queue.put((None, e))

    def get(self, step: int):
        """The batch of `step`: the steps must be asked for in order, from `start`."""
        made, batch = self._queue.get()
        if made is None:
            raise batch
        assert made == step, (made, step)
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
