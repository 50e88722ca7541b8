// gopeer: the Go clients' side of scripts/bench-peers (segmentio/kafka-go, the Go design's
// library, and twmb/franz-go). Produces or consumes a fixed number of records with the
// settings the harness equalises, and prints one JSON line of what it measured.
//
// -mode latency measures end-to-end latency at a fixed rate, as every peer program does: a
// group consumer (offset reset earliest) starts on the topic in its own goroutine, then the
// producer sends record i at its scheduled time t0 + i/rate (at once when behind, never
// skipping), with that time (ns since the Unix epoch, big-endian u64) in the value's first 8
// bytes; the consumer takes now - scheduled for every record scheduled after the warm-up.
//
// A secured listener (franz-go only): -tls-ca ca.pem turns on TLS (Go's crypto/tls,
// verifying the broker against that CA), -sasl-mechanism SCRAM-SHA-512 (or SCRAM-SHA-256)
// with -sasl-user U authenticates, the password from the environment,
// BENCH_SASL_PASSWORD (kept off the command line).
//
// -idempotence on|off (default off) is franz-go's idempotent writes: off is
// kgo.DisableIdempotentWrite with 5 produce requests in flight per broker, on is franz-go's
// default (acks=all required; 5 in flight per broker once the broker's first produce response
// shows it can). kafka-go has no idempotent producer, so it refuses on.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

var (
	client    = flag.String("client", "kafka-go", "kafka-go or franz-go")
	mode      = flag.String("mode", "produce", "produce, consume or latency")
	brokers   = flag.String("brokers", "127.0.0.1:9092", "bootstrap broker")
	topic     = flag.String("topic", "", "topic")
	records   = flag.Int("records", 0, "records to produce or consume")
	size      = flag.Int("size", 100, "record value size")
	acks      = flag.String("acks", "1", "1 or all (latency: default all)")
	codec     = flag.String("compression", "none", "none or lz4")
	lingerMs  = flag.Int("linger-ms", 5, "linger")
	batchSize = flag.Int("batch-bytes", 1<<20, "batch size in bytes")
	rate      = flag.Int64("rate", 20000, "records per second (latency)")
	seconds   = flag.Int64("seconds", 10, "measured seconds, after the warm-up (latency)")
	warmup    = flag.Int64("warmup", 3, "warm-up seconds, sent but not measured (latency)")
	tlsCA     = flag.String("tls-ca", "", "PEM CA file: connect over TLS, verifying the broker with it (franz-go)")
	saslMech  = flag.String("sasl-mechanism", "", "SCRAM-SHA-512 or SCRAM-SHA-256, password from $BENCH_SASL_PASSWORD (franz-go)")
	saslUser  = flag.String("sasl-user", "", "SASL user name (franz-go)")
	idempo    = flag.String("idempotence", "off", "on or off: idempotent writes (franz-go; kafka-go has no idempotent producer)")
)

func payload() []byte {
	// Random uppercase letters, one payload for every record, as ProducerPerformance does.
	x := uint64(0x9E3779B97F4A7C15)
	p := make([]byte, *size)
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte('A' + x%26)
	}
	return p
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gopeer:", err)
	os.Exit(1)
}

func main() {
	flag.Parse()
	if *client != "franz-go" && (*tlsCA != "" || *saslMech != "") {
		fail(fmt.Errorf("-tls-ca and -sasl-mechanism are for -client franz-go only"))
	}
	if *idempo != "on" && *idempo != "off" {
		fail(fmt.Errorf("-idempotence %s: on or off", *idempo))
	}
	if *client != "franz-go" && *idempo == "on" {
		fail(fmt.Errorf("-idempotence on: kafka-go has no idempotent producer"))
	}
	if *mode == "latency" {
		acksSet := false
		flag.Visit(func(f *flag.Flag) { acksSet = acksSet || f.Name == "acks" })
		if !acksSet {
			*acks = "all"
		}
		latency()
		return
	}
	if *topic == "" || *records <= 0 {
		fail(fmt.Errorf("--topic and --records are required"))
	}
	start := time.Now()
	var n int64
	switch *client + "/" + *mode {
	case "kafka-go/produce":
		n = kafkaGoProduce()
	case "kafka-go/consume":
		n = kafkaGoConsume()
	case "franz-go/produce":
		n = franzProduce()
	case "franz-go/consume":
		n = franzConsume()
	default:
		fail(fmt.Errorf("unknown --client/--mode %s/%s", *client, *mode))
	}
	secs := time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]any{
		"client": *client, "mode": *mode, "records": n, "size": *size, "secs": secs,
		"records_per_sec": float64(n) / secs, "mb_per_sec": float64(n) * float64(*size) / 1e6 / secs,
	})
	fmt.Println(string(out))
}

func kafkaGoWriter(acked, failed *int64) *kafka.Writer {
	w := &kafka.Writer{
		Addr:         kafka.TCP(*brokers),
		Topic:        *topic,
		Balancer:     &kafka.LeastBytes{},
		Async:        true,
		BatchSize:    10000, // messages; BatchBytes bounds it first for records over 100 B
		BatchBytes:   int64(*batchSize),
		BatchTimeout: time.Duration(*lingerMs) * time.Millisecond,
		RequiredAcks: kafka.RequireOne,
		Completion: func(msgs []kafka.Message, err error) {
			if err != nil {
				atomic.AddInt64(failed, int64(len(msgs)))
				return
			}
			atomic.AddInt64(acked, int64(len(msgs)))
		},
	}
	if *acks == "all" {
		w.RequiredAcks = kafka.RequireAll
	}
	if *codec == "lz4" {
		w.Compression = compress.Lz4
	}
	return w
}

func kafkaGoProduce() int64 {
	var acked, failed int64
	w := kafkaGoWriter(&acked, &failed)
	value := payload()
	ctx := context.Background()
	for i := 0; i < *records; i++ {
		if err := w.WriteMessages(ctx, kafka.Message{Value: value}); err != nil {
			fail(err)
		}
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	if failed > 0 || acked != int64(*records) {
		fail(fmt.Errorf("acked %d, failed %d of %d", acked, failed, *records))
	}
	return acked
}

func kafkaGoReader() *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:        []string{*brokers},
		GroupID:        fmt.Sprintf("%s-kafka-go", *topic),
		Topic:          *topic,
		MinBytes:       1,
		MaxBytes:       50 << 20,
		MaxWait:        500 * time.Millisecond,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: time.Second,
	})
}

func kafkaGoConsume() int64 {
	r := kafkaGoReader()
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var n int64
	for n < int64(*records) {
		if _, err := r.ReadMessage(ctx); err != nil {
			fail(err)
		}
		n++
	}
	return n
}

// franzBase is every franz-go client's seed broker and security options.
func franzBase() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(*brokers)}
	if *tlsCA != "" {
		pem, err := os.ReadFile(*tlsCA)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail(fmt.Errorf("%s: no PEM certificate in it", *tlsCA))
		}
		// The server name comes from the address dialed (127.0.0.1, in the broker's SAN).
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	if *saslMech != "" {
		auth := scram.Auth{User: *saslUser, Pass: os.Getenv("BENCH_SASL_PASSWORD")}
		switch *saslMech {
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(auth.AsSha512Mechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(auth.AsSha256Mechanism()))
		default:
			fail(fmt.Errorf("-sasl-mechanism %s: only SCRAM-SHA-512 and SCRAM-SHA-256", *saslMech))
		}
	}
	return opts
}

func franzOpts() []kgo.Opt {
	opts := append(franzBase(),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(time.Duration(*lingerMs)*time.Millisecond),
		kgo.ProducerBatchMaxBytes(int32(*batchSize)),
		kgo.MaxBufferedRecords(1<<20),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)
	if *idempo == "off" {
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5))
	}
	// Idempotent (franz-go's default), it refuses MaxProduceRequestsInflightPerBroker and
	// allows 5 requests in flight per broker by itself once the broker's first produce
	// response shows v4 or later; it also requires acks=all (NewClient fails otherwise).
	if *acks == "all" {
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if *codec == "lz4" {
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	}
	return opts
}

func franzProduce() int64 {
	cl, err := kgo.NewClient(franzOpts()...)
	if err != nil {
		fail(err)
	}
	defer cl.Close()
	var acked, failed int64
	value := payload()
	ctx := context.Background()
	for i := 0; i < *records; i++ {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				atomic.AddInt64(&failed, 1)
				return
			}
			atomic.AddInt64(&acked, 1)
		})
	}
	if err := cl.Flush(ctx); err != nil {
		fail(err)
	}
	if failed > 0 || acked != int64(*records) {
		fail(fmt.Errorf("acked %d, failed %d of %d", acked, failed, *records))
	}
	return acked
}

func franzConsumer() *kgo.Client {
	cl, err := kgo.NewClient(append(franzBase(),
		kgo.ConsumerGroup(fmt.Sprintf("%s-franz-go", *topic)),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.FetchMinBytes(1),
		kgo.FetchMaxBytes(50<<20),
	)...)
	if err != nil {
		fail(err)
	}
	return cl
}

func franzConsume() int64 {
	cl := franzConsumer()
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var n int64
	for n < int64(*records) {
		fetches := cl.PollFetches(ctx)
		if errs := fetches.Errors(); len(errs) > 0 {
			fail(errs[0].Err)
		}
		n += int64(fetches.NumRecords())
	}
	return n
}

// latencyClient is one library's side of -mode latency.
type latencyClient interface {
	// consume calls got with each record's value as the library hands it over, until ctx ends.
	consume(ctx context.Context, got func(value []byte)) error
	// send hands a record to the library's asynchronous send.
	send(value []byte)
	// flush waits for every record sent and says how many were acknowledged and failed.
	flush() (acked, failed int64)
}

type kafkaGoLatency struct {
	w             *kafka.Writer
	acked, failed int64
}

func (k *kafkaGoLatency) consume(ctx context.Context, got func([]byte)) error {
	r := kafkaGoReader()
	defer r.Close()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		got(m.Value)
	}
}

func (k *kafkaGoLatency) send(value []byte) {
	if err := k.w.WriteMessages(context.Background(), kafka.Message{Value: value}); err != nil {
		fail(err)
	}
}

func (k *kafkaGoLatency) flush() (int64, int64) {
	if err := k.w.Close(); err != nil {
		fail(err)
	}
	return atomic.LoadInt64(&k.acked), atomic.LoadInt64(&k.failed)
}

type franzLatency struct {
	cl            *kgo.Client
	acked, failed int64
}

func (f *franzLatency) consume(ctx context.Context, got func([]byte)) error {
	cl := franzConsumer()
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return errs[0].Err
		}
		fetches.EachRecord(func(r *kgo.Record) { got(r.Value) })
	}
}

func (f *franzLatency) send(value []byte) {
	f.cl.Produce(context.Background(), &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
		if err != nil {
			atomic.AddInt64(&f.failed, 1)
			return
		}
		atomic.AddInt64(&f.acked, 1)
	})
}

func (f *franzLatency) flush() (int64, int64) {
	if err := f.cl.Flush(context.Background()); err != nil {
		fail(err)
	}
	f.cl.Close()
	return atomic.LoadInt64(&f.acked), atomic.LoadInt64(&f.failed)
}

// sleepUntil sleeps until wall-clock time t (ns since the epoch) if it is in the future.
// It calls nanosleep directly, as the Rust and Java programs' sleeps do: time.Sleep rounds
// short sleeps up to about a millisecond here (the runtime's timers wait in epoll with
// millisecond resolution), which would delay every record by up to that much.
func sleepUntil(t int64) {
	if d := t - time.Now().UnixNano(); d > 0 {
		ts := syscall.NsecToTimespec(d)
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	}
}

// quantile is the nearest-rank quantile of sorted values, q in thousandths (exact
// integer ranks: 990 is p99).
func quantile(sorted []int64, q int) int64 {
	rank := max((len(sorted)*q+999)/1000, 1)
	return sorted[rank-1]
}

func latency() {
	if *topic == "" || *size < 8 || *rate <= 0 || *seconds <= 0 || *warmup < 0 {
		fail(fmt.Errorf("latency needs -topic, -size >= 8, -rate > 0, -seconds > 0, -warmup >= 0"))
	}
	var lc latencyClient
	switch *client {
	case "kafka-go":
		k := &kafkaGoLatency{}
		k.w = kafkaGoWriter(&k.acked, &k.failed)
		lc = k
	case "franz-go":
		cl, err := kgo.NewClient(franzOpts()...)
		if err != nil {
			fail(err)
		}
		lc = &franzLatency{cl: cl}
	default:
		fail(fmt.Errorf("unknown -client %s", *client))
	}

	// The consumer, in its own goroutine: each record's scheduled and arrival time.
	type seen struct{ scheduled, got int64 }
	var arrivals []seen
	var count int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- lc.consume(ctx, func(v []byte) {
			now := time.Now().UnixNano()
			if len(v) < 8 {
				fail(fmt.Errorf("a record of %d bytes", len(v)))
			}
			arrivals = append(arrivals, seen{int64(binary.BigEndian.Uint64(v)), now})
			atomic.AddInt64(&count, 1)
		})
	}()

	// The producer: record i at t0 + i/rate, never skipping.
	base := payload()
	total := *rate * (*warmup + *seconds)
	t0 := time.Now().UnixNano()
	measuredFrom := t0 + *warmup*1e9
	for i := int64(0); i < total; i++ {
		scheduled := t0 + i*1e9 / *rate
		sleepUntil(scheduled)
		v := make([]byte, *size)
		copy(v, base)
		binary.BigEndian.PutUint64(v, uint64(scheduled))
		lc.send(v)
	}
	sentEnd := time.Now().UnixNano()
	acked, failed := lc.flush()
	if failed > 0 || acked != total {
		fail(fmt.Errorf("acked %d, failed %d of %d", acked, failed, total))
	}
	deadline := time.Now().Add(60 * time.Second)
	for atomic.LoadInt64(&count) < total {
		select {
		case err := <-done:
			fail(fmt.Errorf("consumer stopped after %d of %d records: %v", atomic.LoadInt64(&count), total, err))
		default:
		}
		if time.Now().After(deadline) {
			fail(fmt.Errorf("%d of %d records arrived within 60 s of the producer's end", atomic.LoadInt64(&count), total))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		fail(err)
	}

	// When the consumer got going: a first record after the warm-up means start-up backlog
	// is in the figures (the harness warns).
	first := int64(-1)
	var lat []int64
	for _, a := range arrivals {
		if first < 0 || a.got-t0 < first {
			first = a.got - t0
		}
		if a.scheduled >= measuredFrom {
			lat = append(lat, a.got-a.scheduled)
		}
	}
	if len(lat) == 0 {
		fail(fmt.Errorf("no measured records"))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	measuredSent := total - *rate**warmup
	end := max(sentEnd, t0+(*warmup+*seconds)*1e9)
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	out, _ := json.Marshal(map[string]any{
		"client": *client, "mode": "latency", "rate": *rate, "records": len(lat),
		"p50_ms": ms(quantile(lat, 500)), "p99_ms": ms(quantile(lat, 990)),
		"p999_ms": ms(quantile(lat, 999)), "max_ms": ms(lat[len(lat)-1]),
		"sent_rate": float64(measuredSent) / (float64(end-measuredFrom) / 1e9),
		"first_ms":  ms(first),
	})
	fmt.Println(string(out))
}
