// The Java client's side of scripts/bench-peers' latency section: end-to-end latency at a
// fixed rate, measured as every peer program measures it. A KafkaConsumer (group, offset
// reset earliest) polls the topic in its own thread; then a KafkaProducer, with the settings
// the harness equalises, sends record i at its scheduled time t0 + i / rate (at once when
// behind, never skipping), with that time (ns since the Unix epoch, big-endian u64) in the
// value's first 8 bytes. The consumer takes now - scheduled for every record scheduled after
// the warm-up, and one JSON line reports the quantiles.
//
// Single file, no build tool: the harness compiles it against the jars scripts/kafka fetches:
//   javac -cp "$(scripts/kafka classpath)" -d target/peers/java bench/peers/java/Latency.java
//   java -cp "target/peers/java:$(scripts/kafka classpath)" Latency --topic t --rate 20000

import java.nio.ByteBuffer;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Latency {
    static Map<String, String> args = new HashMap<>();

    static String arg(String name, String fallback) {
        return args.getOrDefault(name, fallback);
    }

    static void fail(String msg) {
        System.err.println("Latency: " + msg);
        System.exit(1);
    }

    /** Nanoseconds since the Unix epoch, from the wall clock. */
    static long wallNs() {
        Instant t = Instant.now();
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    /** Random uppercase letters, as the other programs make them (the same xorshift). */
    static byte[] payload(int size) {
        long x = 0x9E3779B97F4A7C15L;
        byte[] p = new byte[size];
        for (int i = 0; i < size; i++) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            p[i] = (byte) ('A' + Long.remainderUnsigned(x, 26));
        }
        return p;
    }

    /** Nearest-rank quantile of sorted values, q in thousandths (exact integer ranks). */
    static long quantile(long[] sorted, int q) {
        int rank = Math.max((int) (((long) sorted.length * q + 999) / 1000), 1);
        return sorted[rank - 1];
    }

    public static void main(String[] argv) throws Exception {
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                fail("unexpected argument " + argv[i]);
            }
            args.put(argv[i], argv[i + 1]);
        }
        String brokers = arg("--brokers", "127.0.0.1:9092");
        String topic = arg("--topic", "");
        long rate = Long.parseLong(arg("--rate", "20000"));
        long seconds = Long.parseLong(arg("--seconds", "10"));
        long warmup = Long.parseLong(arg("--warmup", "3"));
        int size = Integer.parseInt(arg("--size", "100"));
        if (topic.isEmpty() || size < 8 || rate <= 0 || seconds <= 0 || warmup < 0) {
            fail("needs --topic, --size >= 8, --rate > 0, --seconds > 0, --warmup >= 0");
        }

        // The consumer, in its own thread: each record's scheduled and arrival time.
        Properties cp = new Properties();
        cp.put("bootstrap.servers", brokers);
        cp.put("group.id", topic + "-java");
        cp.put("auto.offset.reset", "earliest");
        cp.put("fetch.max.wait.ms", "500");
        cp.put("fetch.min.bytes", "1");
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
        AtomicLong count = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        long[][] seen = new long[1][];
        AtomicReference<Throwable> consumerError = new AtomicReference<>();
        Thread consumerThread = new Thread(() -> {
            long[] pairs = new long[1 << 16];
            int n = 0;
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
                consumer.subscribe(List.of(topic));
                while (!stop.get()) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                        long now = wallNs();
                        if (r.value() == null || r.value().length < 8) {
                            throw new IllegalStateException("a record without the 8-byte time");
                        }
                        if (n + 2 > pairs.length) {
                            pairs = Arrays.copyOf(pairs, pairs.length * 2);
                        }
                        pairs[n++] = ByteBuffer.wrap(r.value()).getLong();
                        pairs[n++] = now;
                        count.incrementAndGet();
                    }
                }
            } catch (Throwable e) {
                consumerError.set(e);
            }
            seen[0] = Arrays.copyOf(pairs, n);
        }, "consumer");
        consumerThread.start();

        // The producer: record i at t0 + i / rate, never skipping. The equalised settings
        // are those the harness gives ProducerPerformance.
        Properties pp = new Properties();
        pp.put("bootstrap.servers", brokers);
        pp.put("acks", arg("--acks", "all"));
        pp.put("linger.ms", arg("--linger-ms", "5"));
        pp.put("batch.size", arg("--batch-bytes", "1048576"));
        pp.put("compression.type", arg("--compression", "none"));
        pp.put("enable.idempotence", "false");
        pp.put("max.in.flight.requests.per.connection", "5");
        pp.put("max.request.size", String.valueOf(2 * Integer.parseInt(arg("--batch-bytes", "1048576"))));
        pp.put("buffer.memory", "67108864");
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        AtomicLong acked = new AtomicLong(), failed = new AtomicLong();
        byte[] base = payload(size);
        long total = rate * (warmup + seconds);
        long sentEnd, t0, measuredFrom;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            t0 = wallNs();
            measuredFrom = t0 + warmup * 1_000_000_000L;
            for (long i = 0; i < total; i++) {
                long scheduled = t0 + i * 1_000_000_000L / rate;
                // parkNanos, not Thread.sleep: Java 17's sleep rounds to whole milliseconds.
                for (long d; (d = scheduled - wallNs()) > 0; ) {
                    LockSupport.parkNanos(d);
                }
                byte[] v = base.clone();
                ByteBuffer.wrap(v).putLong(scheduled);
                producer.send(new ProducerRecord<>(topic, v), (md, e) -> {
                    (e == null ? acked : failed).incrementAndGet();
                });
            }
            sentEnd = wallNs();
            producer.flush();
        }
        if (failed.get() > 0 || acked.get() != total) {
            fail("acked " + acked.get() + ", failed " + failed.get() + " of " + total);
        }
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (count.get() < total) {
            if (consumerError.get() != null) {
                fail("consumer stopped after " + count.get() + " of " + total + ": " + consumerError.get());
            }
            if (System.nanoTime() > deadline) {
                fail(count.get() + " of " + total + " records arrived within 60 s of the producer's end");
            }
            Thread.sleep(1);
        }
        stop.set(true);
        consumerThread.join();
        if (consumerError.get() != null) {
            fail("consumer: " + consumerError.get());
        }

        long[] pairs = seen[0];
        long[] lat = new long[pairs.length / 2];
        int m = 0;
        // When the consumer got going: a first record after the warm-up means start-up
        // backlog is in the figures (the harness warns).
        long first = Long.MAX_VALUE;
        for (int i = 0; i < pairs.length; i += 2) {
            first = Math.min(first, pairs[i + 1] - t0);
            if (pairs[i] >= measuredFrom) {
                lat[m++] = pairs[i + 1] - pairs[i];
            }
        }
        if (m == 0) {
            fail("no measured records");
        }
        lat = Arrays.copyOf(lat, m);
        Arrays.sort(lat);
        long measuredSent = total - rate * warmup;
        long end = Math.max(sentEnd, t0 + (warmup + seconds) * 1_000_000_000L);
        double sentRate = measuredSent / ((end - measuredFrom) / 1e9);
        System.out.printf(Locale.ROOT, "{\"client\":\"java\",\"mode\":\"latency\",\"rate\":%d,\"records\":%d,"
                + "\"p50_ms\":%.6f,\"p99_ms\":%.6f,\"p999_ms\":%.6f,\"max_ms\":%.6f,\"sent_rate\":%.3f,\"first_ms\":%.3f}%n",
                rate, m, quantile(lat, 500) / 1e6, quantile(lat, 990) / 1e6, quantile(lat, 999) / 1e6,
                lat[m - 1] / 1e6, sentRate, first / 1e6);
    }
}
