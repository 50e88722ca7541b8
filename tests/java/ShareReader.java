/*
 * ShareReader: a reference share group member (KIP-932), Apache Kafka's own
 * KafkaShareConsumer, so that kpipe's tests can put kpipe members and a Java member in one
 * share group and see who got what.
 *
 * A single-file program for Java's source launcher (JDK 11+; only the JDK and kafka-clients):
 *
 *   java --class-path "$(scripts/kafka classpath)" tests/java/ShareReader.java \
 *        --bootstrap B --topic T --group G [--max-poll-records N] [--acquire-mode M]
 *        [--work-ms MS] [--max-ms MS]
 *
 * Subscribes to T as a member of share group G with explicit acknowledgement
 * (share.acknowledgement.mode=explicit), max.poll.records N (default 10) and
 * share.acquire.mode M (record_limit, the default here, or batch_optimized). It polls
 * (100 ms at a time); for each record it prints
 *
 *   R <partition> <offset> <delivery count> <value>
 *
 * (stdout flushed per line), sleeps MS (default 0: the work), and acknowledges it ACCEPT.
 * After each non-empty poll it commits the acknowledgements (commitSync, at most 10 s) and
 * prints, for each partition the broker refused them for,
 *
 *   F <partition> <exception>
 *
 * It stops when a line `stop` comes on stdin or stdin ends: closes the consumer (at most
 * 10 s; what it acquired and did not hand out is released), prints `CLOSED` and exits 0.
 * The whole run is bounded by --max-ms (default 120000): then it closes, says so on stderr
 * and exits 1. A usage error exits 2, any other exception 1 (stack trace on stderr).
 *
 * stdout carries only the lines above: everything else (the client's log4j output, ERROR
 * level by default, which log4j's default configuration would print on stdout) goes to
 * stderr. More logging: java -Dorg.apache.logging.log4j.level=INFO ...
 */

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class ShareReader {
    static final Duration POLL = Duration.ofMillis(100);
    static final Duration COMMIT_TIMEOUT = Duration.ofSeconds(10);
    static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(10);

    static final String USAGE = String.join("\n",
            "usage: ShareReader --bootstrap B --topic T --group G [--max-poll-records N]",
            "                   [--acquire-mode record_limit|batch_optimized] [--work-ms MS]",
            "                   [--max-ms MS]");

    static final Set<String> OPTS = Set.of("bootstrap", "topic", "group", "max-poll-records",
            "acquire-mode", "work-ms", "max-ms");

    /** The real stdout: System.out is pointed at stderr, so that only our lines reach it. */
    static PrintStream out;

    static final class UsageError extends Exception {
        UsageError(String message) {
            super(message);
        }
    }

    public static void main(String[] args) {
        // Before any Kafka (hence log4j) class loads: log4j's default console appender
        // writes to System.out as it finds it then, so it finds stderr.
        out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        if (System.getProperty("org.apache.logging.log4j.level") == null) {
            System.setProperty("org.apache.logging.log4j.level", "ERROR");
        }
        int code;
        try {
            code = run(parse(args));
        } catch (UsageError e) {
            System.err.println("ShareReader: " + e.getMessage());
            System.err.println(USAGE);
            code = 2;
        } catch (Throwable e) {
            System.err.print("ShareReader: failed: ");
            e.printStackTrace(System.err);
            code = 1;
        }
        out.flush();
        System.err.flush();
        // exit, not return: a client thread or the stdin reader must not keep the JVM alive.
        System.exit(code);
    }

    static int run(Map<String, String> opts) throws UsageError, InterruptedException {
        String topic = str(opts, "topic");
        int workMs = num(opts, "work-ms", 0, 0);
        long maxMs = num(opts, "max-ms", 120_000, 1);
        String mode = opts.getOrDefault("acquire-mode", "record_limit");
        if (!mode.equals("record_limit") && !mode.equals("batch_optimized")) {
            throw new UsageError("--acquire-mode is record_limit or batch_optimized, not " + mode);
        }
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, str(opts, "bootstrap"));
        props.put(ConsumerConfig.GROUP_ID_CONFIG, str(opts, "group"));
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "sharereader");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG,
                String.valueOf(num(opts, "max-poll-records", 10, 1)));
        props.put(ConsumerConfig.SHARE_ACKNOWLEDGEMENT_MODE_CONFIG, "explicit");
        props.put(ConsumerConfig.SHARE_ACQUIRE_MODE_CONFIG, mode);

        AtomicBoolean stop = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    if (line.trim().equalsIgnoreCase("stop")) {
                        break;
                    }
                }
            } catch (Exception e) {
                // stdin gone: stop as on EOF
            }
            stop.set(true);
        }, "sharereader-stdin");
        stdin.setDaemon(true);
        stdin.start();

        long deadline = System.nanoTime() + maxMs * 1_000_000L;
        boolean timedOut = false;
        KafkaShareConsumer<String, String> consumer =
                new KafkaShareConsumer<>(props, new StringDeserializer(), new StringDeserializer());
        try {
            consumer.subscribe(List.of(topic));
            while (!stop.get()) {
                if (System.nanoTime() - deadline > 0) {
                    timedOut = true;
                    break;
                }
                ConsumerRecords<String, String> records = consumer.poll(POLL);
                if (records.isEmpty()) {
                    continue;
                }
                for (ConsumerRecord<String, String> r : records) {
                    Optional<Short> count = r.deliveryCount();
                    out.println("R " + r.partition() + " " + r.offset() + " "
                            + count.map(String::valueOf).orElse("-") + " " + r.value());
                    if (workMs > 0) {
                        Thread.sleep(workMs);
                    }
                    consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                }
                Map<TopicIdPartition, Optional<KafkaException>> done =
                        consumer.commitSync(COMMIT_TIMEOUT);
                for (Map.Entry<TopicIdPartition, Optional<KafkaException>> e : done.entrySet()) {
                    if (e.getValue().isPresent()) {
                        out.println("F " + e.getKey().partition() + " " + e.getValue().get());
                    }
                }
            }
        } finally {
            consumer.close(CLOSE_TIMEOUT);
        }
        if (timedOut) {
            System.err.println("ShareReader: not told to stop within " + maxMs + " ms");
            return 1;
        }
        out.println("CLOSED");
        return 0;
    }

    static Map<String, String> parse(String[] args) throws UsageError {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            String a = args[i];
            if (!a.startsWith("--")) {
                throw new UsageError("unexpected argument: " + a);
            }
            String name = a.substring(2);
            if (!OPTS.contains(name)) {
                throw new UsageError("unknown option: " + a);
            }
            if (i + 1 >= args.length) {
                throw new UsageError("option " + a + " needs a value");
            }
            if (opts.put(name, args[i + 1]) != null) {
                throw new UsageError("option " + a + " given twice");
            }
        }
        return opts;
    }

    static String str(Map<String, String> opts, String name) throws UsageError {
        String v = opts.get(name);
        if (v == null || v.isEmpty()) {
            throw new UsageError("missing --" + name);
        }
        return v;
    }

    static int num(Map<String, String> opts, String name, int dflt, int min) throws UsageError {
        String v = opts.get(name);
        int n;
        if (v == null) {
            n = dflt;
        } else {
            try {
                n = Integer.parseInt(v);
            } catch (NumberFormatException e) {
                throw new UsageError("--" + name + " wants an integer, not " + v);
            }
        }
        if (n < min) {
            throw new UsageError("--" + name + " must be at least " + min + ", not " + n);
        }
        return n;
    }
}
