"""Reads a group's committed offsets from several threads for a while, as the consumer-lag poller
does, in one of two ways; run as a script by tests/chaos/test_broker_loss.py while the broker is
killed and started again.

  python committed_offsets.py BOOTSTRAP SECONDS admin     the admin client's
      list_consumer_group_offsets (what KafkaLog.committed did): librdkafka aborts the process
      (rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0' failed)
  python committed_offsets.py BOOTSTRAP SECONDS consumer  Consumer.committed on a consumer that
      never joins the group (what it does now): errors while the broker is gone, then answers

Prints "survived" and exits 0 when the time is up.
"""

from __future__ import annotations

import sys
import threading
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

TOPIC = "eventsvm-chaos-offsets"
THREADS = 4


def main(bootstrap: str, seconds: float, mode: str) -> None:
    """Ask until `seconds` have passed; every failure is expected and ignored."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    end = time.monotonic() + seconds
    partitions = [TopicPartition(TOPIC, p) for p in range(4)]

    def committed(group: str) -> None:
        consumer = None
        if mode == "consumer":
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0,
                                 "enable.auto.commit": False, "isolation.level": "read_committed"})
        while time.monotonic() < end:
            try:
                if consumer is not None:
                    consumer.committed(partitions, timeout=2.0)
                else:
                    query = ConsumerGroupTopicPartitions(group, partitions)
                    futures = admin.list_consumer_group_offsets([query], require_stable=True,
                                                                request_timeout=2.0)
                    futures[group].result(timeout=2.0)
            except Exception:
                time.sleep(0.01)
        if consumer is not None:
            consumer.close()

    def ends() -> None:  # the end offsets the lag poller asks for beside them
        while time.monotonic() < end:
            try:
                futures = admin.list_offsets({partitions[0]: OffsetSpec.latest()}, request_timeout=2.0,
                                             isolation_level=IsolationLevel.READ_COMMITTED)
                for future in futures.values():
                    future.result(timeout=2.0)
            except Exception:
                time.sleep(0.01)

    threads = [threading.Thread(target=committed, args=(f"eventsvm-chaos-{i}",)) for i in range(THREADS)]
    threads.append(threading.Thread(target=ends))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("survived", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
