/*
 * TxnWriter: a reference transactional producer (Apache Kafka's own Java client), so that
 * kpipe's tests can read logs holding real transactions -- committed and aborted batches,
 * their control records (markers), non-transactional records in between, and a transaction
 * left open -- written the way Java writes them.
 *
 * A single-file program for Java's source launcher (JDK 11+; only the JDK and kafka-clients):
 *
 *   java --class-path "$(scripts/kafka classpath)" tests/java/TxnWriter.java MODE ARGS...
 *
 * The jars of scripts/kafka's default version (4.4) serve both its brokers (4.4 and the
 * legacy 3.9.1). The topic must exist with at least P partitions.
 *
 * Mode `script`: a fixed run of transactions, some committed, some aborted.
 *
 *   TxnWriter script --bootstrap B --topic T --partitions P --transactional-id ID
 *                    --transactions N --records R --abort-every K [--plain R2]
 *
 *   initTransactions once; then for txn = 0..N-1: begin; send R records, record i of the
 *   transaction to partition i % P (explicit partition), key `txn-<txn>-<i>`, value
 *   `commit-<txn>-<i>` if the transaction will commit or `abort-<txn>-<i>` if it will abort
 *   (transaction txn aborts when (txn+1) % K == 0, so with K=3: 0,1 commit, 2 aborts, ...);
 *   flush; commit or abort. After each transaction (the last one included), if R2 > 0, a
 *   second, non-transactional producer (idempotent by default, acks=all) sends R2 records to
 *   each partition p, key = value = `plain-<txn>-<p>-<j>` (j = 0..R2-1), and flushes; so
 *   each partition's log interleaves transactional batches, markers and plain records.
 *   Records per run: committed = R * (N - N/K), aborted = R * (N/K), plain = N * P * R2.
 *   stdout, on success (exit 0), exactly one line:
 *
 *     DONE committed=<records> aborted=<records> plain=<records>
 *
 * Mode `hold`: one transaction left open until told how to end it.
 *
 *   TxnWriter hold --bootstrap B --topic T --partitions P --transactional-id ID --records R
 *                  [--wait-ms MS]
 *
 *   initTransactions; begin; send R records, record i to partition i % P, key `open-<i>`,
 *   value `open-<i>`; flush; print `OPEN` (stdout flushed); then read one line on stdin:
 *   `commit` commits, `abort` aborts (blank lines are skipped; case and surrounding blanks
 *   ignored), EOF aborts; print `ENDED commit` or `ENDED abort` and exit 0. While it waits,
 *   read_committed readers stop at the partitions' last stable offset (the first offset of
 *   the open transaction). The wait is bounded by --wait-ms (default 60000, the transaction
 *   timeout, after which the broker aborts the transaction itself): then it aborts, says so
 *   on stderr and exits 1; so does any other line on stdin.
 *   stdout: `OPEN`, then `ENDED <commit|abort>`.
 *
 * Producers: acks=all, transaction.timeout.ms=60000, linger.ms=5, max.block.ms=30000,
 * delivery.timeout.ms=30000 (request.timeout.ms=20000 to fit under it), client.id
 * `txnwriter-<mode>-<ID>` (the plain one: `txnwriter-plain-<ID>`). Every blocking call has a
 * bound: send's metadata wait and initTransactions/commitTransaction/abortTransaction block at
 * most max.block.ms (commitTransaction(Duration)/abortTransaction(Duration) are used instead
 * when the client on the class path has them -- 4.4's does not); flush ends once every record
 * is acknowledged or expired (delivery.timeout.ms); close waits at most 5 s.
 *
 * Errors: a usage error prints the message and usage on stderr and exits 2; any other
 * exception prints its stack trace on stderr and exits 1. stdout carries only the lines above:
 * anything else (e.g. the client's log4j output, ERROR level by default, which log4j's default
 * configuration would print on stdout) goes to stderr. More logging:
 *   java -Dorg.apache.logging.log4j.level=INFO --class-path ... TxnWriter.java ...
 */

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnWriter {
    static final int MAX_BLOCK_MS = 30_000;
    static final int DELIVERY_TIMEOUT_MS = 30_000;
    static final int REQUEST_TIMEOUT_MS = 20_000;
    static final int TRANSACTION_TIMEOUT_MS = 60_000;
    static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(5);

    static final String USAGE = String.join("\n",
            "usage: TxnWriter script --bootstrap B --topic T --partitions P --transactional-id ID",
            "                        --transactions N --records R --abort-every K [--plain R2]",
            "       TxnWriter hold   --bootstrap B --topic T --partitions P --transactional-id ID",
            "                        --records R [--wait-ms MS]");

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
            if (args.length == 0) {
                throw new UsageError("no mode given");
            }
            String mode = args[0];
            Map<String, String> opts = parse(args);
            switch (mode) {
                case "script":
                    code = script(opts);
                    break;
                case "hold":
                    code = hold(opts);
                    break;
                default:
                    throw new UsageError("unknown mode: " + mode);
            }
        } catch (UsageError e) {
            System.err.println("TxnWriter: " + e.getMessage());
            System.err.println(USAGE);
            code = 2;
        } catch (Throwable e) {
            System.err.print("TxnWriter: failed: ");
            e.printStackTrace(System.err);
            code = 1;
        }
        out.flush();
        System.err.flush();
        // exit, not return: a client thread or the stdin reader must not keep the JVM alive.
        System.exit(code);
    }

    static final Set<String> SCRIPT_OPTS = Set.of("bootstrap", "topic", "partitions",
            "transactional-id", "transactions", "records", "abort-every", "plain");
    static final Set<String> HOLD_OPTS = Set.of("bootstrap", "topic", "partitions",
            "transactional-id", "records", "wait-ms");

    static Map<String, String> parse(String[] args) throws UsageError {
        Set<String> known = args[0].equals("hold") ? HOLD_OPTS : SCRIPT_OPTS;
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i < args.length; i += 2) {
            String a = args[i];
            if (!a.startsWith("--")) {
                throw new UsageError("unexpected argument: " + a);
            }
            String name = a.substring(2);
            if (!known.contains(name)) {
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

    static int num(Map<String, String> opts, String name, Integer dflt, int min) throws UsageError {
        String v = opts.get(name);
        int n;
        if (v == null) {
            if (dflt == null) {
                throw new UsageError("missing --" + name);
            }
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

    static Properties common(String bootstrap, String clientId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Integer.toString(MAX_BLOCK_MS));
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, Integer.toString(DELIVERY_TIMEOUT_MS));
        // delivery.timeout.ms must be >= linger.ms + request.timeout.ms (default 30000).
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, Integer.toString(REQUEST_TIMEOUT_MS));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return p;
    }

    static KafkaProducer<String, String> transactional(String bootstrap, String mode, String txnId) {
        Properties p = common(bootstrap, "txnwriter-" + mode + "-" + txnId);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, Integer.toString(TRANSACTION_TIMEOUT_MS));
        return new KafkaProducer<>(p);
    }

    /** commitTransaction(Duration) / abortTransaction(Duration) where the client has them,
     *  else the no-argument call (bounded by max.block.ms). */
    static void end(KafkaProducer<String, String> producer, boolean commit) throws Exception {
        String name = commit ? "commitTransaction" : "abortTransaction";
        Method bounded = null;
        try {
            bounded = producer.getClass().getMethod(name, Duration.class);
        } catch (NoSuchMethodException e) {
            // an older client: max.block.ms bounds the call
        }
        if (bounded == null) {
            if (commit) {
                producer.commitTransaction();
            } else {
                producer.abortTransaction();
            }
            return;
        }
        try {
            bounded.invoke(producer, Duration.ofMillis(MAX_BLOCK_MS));
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (cause instanceof Exception) {
                throw (Exception) cause;
            }
            throw e;
        }
    }

    /** flush, then surface the first failed send (flush itself does not throw). */
    static void flushAndCheck(KafkaProducer<String, String> producer,
            List<Future<RecordMetadata>> sent) throws Exception {
        producer.flush();
        for (Future<RecordMetadata> f : sent) {
            f.get(1, TimeUnit.SECONDS); // done after flush; throws ExecutionException on failure
        }
        sent.clear();
    }

    static void close(KafkaProducer<String, String> producer) {
        if (producer == null) {
            return;
        }
        try {
            producer.close(CLOSE_TIMEOUT);
        } catch (Throwable e) {
            System.err.println("TxnWriter: close failed: " + e);
        }
    }

    static int script(Map<String, String> opts) throws Exception {
        String bootstrap = str(opts, "bootstrap");
        String topic = str(opts, "topic");
        int partitions = num(opts, "partitions", null, 1);
        String txnId = str(opts, "transactional-id");
        int transactions = num(opts, "transactions", null, 0);
        int records = num(opts, "records", null, 0);
        int abortEvery = num(opts, "abort-every", null, 1);
        int plain = num(opts, "plain", 0, 0);

        long committed = 0, aborted = 0, plainSent = 0;
        KafkaProducer<String, String> txn = null;
        KafkaProducer<String, String> nonTxn = null;
        try {
            txn = transactional(bootstrap, "script", txnId);
            if (plain > 0) {
                nonTxn = new KafkaProducer<>(common(bootstrap, "txnwriter-plain-" + txnId));
            }
            txn.initTransactions();
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int t = 0; t < transactions; t++) {
                boolean commit = (t + 1) % abortEvery != 0;
                String word = commit ? "commit" : "abort";
                txn.beginTransaction();
                for (int i = 0; i < records; i++) {
                    sent.add(txn.send(new ProducerRecord<>(topic, i % partitions,
                            "txn-" + t + "-" + i, word + "-" + t + "-" + i)));
                }
                flushAndCheck(txn, sent);
                end(txn, commit);
                if (commit) {
                    committed += records;
                } else {
                    aborted += records;
                }
                if (nonTxn != null) {
                    for (int p = 0; p < partitions; p++) {
                        for (int j = 0; j < plain; j++) {
                            String kv = "plain-" + t + "-" + p + "-" + j;
                            sent.add(nonTxn.send(new ProducerRecord<>(topic, p, kv, kv)));
                        }
                    }
                    flushAndCheck(nonTxn, sent);
                    plainSent += (long) partitions * plain;
                }
            }
        } finally {
            close(nonTxn);
            close(txn);
        }
        out.println("DONE committed=" + committed + " aborted=" + aborted + " plain=" + plainSent);
        return 0;
    }

    static int hold(Map<String, String> opts) throws Exception {
        String bootstrap = str(opts, "bootstrap");
        String topic = str(opts, "topic");
        int partitions = num(opts, "partitions", null, 1);
        String txnId = str(opts, "transactional-id");
        int records = num(opts, "records", null, 0);
        int waitMs = num(opts, "wait-ms", TRANSACTION_TIMEOUT_MS, 1);

        KafkaProducer<String, String> txn = null;
        try {
            txn = transactional(bootstrap, "hold", txnId);
            txn.initTransactions();
            txn.beginTransaction();
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < records; i++) {
                String kv = "open-" + i;
                sent.add(txn.send(new ProducerRecord<>(topic, i % partitions, kv, kv)));
            }
            flushAndCheck(txn, sent);
            out.println("OPEN");
            out.flush();

            String command = awaitCommand(waitMs);
            if (command == null) {
                end(txn, false);
                System.err.println("TxnWriter: no command on stdin within " + waitMs
                        + " ms; aborted the transaction");
                return 1;
            }
            boolean commit;
            switch (command) {
                case "commit":
                    commit = true;
                    break;
                case "abort":
                case "": // EOF
                    commit = false;
                    break;
                default:
                    end(txn, false);
                    System.err.println("TxnWriter: unknown command on stdin: " + command
                            + " (want commit or abort); aborted the transaction");
                    return 1;
            }
            end(txn, commit);
            out.println("ENDED " + (commit ? "commit" : "abort"));
            return 0;
        } finally {
            close(txn);
        }
    }

    /** The first non-blank stdin line, trimmed and lower-cased; "" at EOF; null if none came
     *  within waitMs. Read on a daemon thread, so that the wait has a bound. */
    static String awaitCommand(int waitMs) throws InterruptedException {
        LinkedBlockingQueue<String> lines = new LinkedBlockingQueue<>();
        Thread reader = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    line = line.trim().toLowerCase();
                    if (!line.isEmpty()) {
                        lines.add(line);
                        return;
                    }
                }
            } catch (Exception e) {
                System.err.println("TxnWriter: reading stdin failed: " + e);
            }
            lines.add("");
        }, "txnwriter-stdin");
        reader.setDaemon(true);
        reader.start();
        return lines.poll(waitMs, TimeUnit.MILLISECONDS);
    }
}
