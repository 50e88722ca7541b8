// gopeer: the Go clients' side of scripts/bench-peers (segmentio/kafka-go, the Go design's
// library, and twmb/franz-go). Produces or consumes a fixed number of records with the
// settings the harness equalises, and prints one JSON line of what it measured.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	client    = flag.String("client", "kafka-go", "kafka-go or franz-go")
	mode      = flag.String("mode", "produce", "produce or consume")
	brokers   = flag.String("brokers", "127.0.0.1:9092", "bootstrap broker")
	topic     = flag.String("topic", "", "topic")
	records   = flag.Int("records", 0, "records to produce or consume")
	size      = flag.Int("size", 100, "record value size")
	acks      = flag.String("acks", "1", "1 or all")
	codec     = flag.String("compression", "none", "none or lz4")
	lingerMs  = flag.Int("linger-ms", 5, "linger")
	batchSize = flag.Int("batch-bytes", 1<<20, "batch size in bytes")
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

func kafkaGoProduce() int64 {
	var acked, failed int64
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
				atomic.AddInt64(&failed, int64(len(msgs)))
				return
			}
			atomic.AddInt64(&acked, int64(len(msgs)))
		},
	}
	if *acks == "all" {
		w.RequiredAcks = kafka.RequireAll
	}
	if *codec == "lz4" {
		w.Compression = compress.Lz4
	}
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

func kafkaGoConsume() int64 {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        []string{*brokers},
		GroupID:        fmt.Sprintf("%s-kafka-go", *topic),
		Topic:          *topic,
		MinBytes:       1,
		MaxBytes:       50 << 20,
		MaxWait:        500 * time.Millisecond,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: time.Second,
	})
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

func franzOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(*brokers),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(time.Duration(*lingerMs) * time.Millisecond),
		kgo.ProducerBatchMaxBytes(int32(*batchSize)),
		kgo.MaxBufferedRecords(1 << 20),
		kgo.DisableIdempotentWrite(),
		kgo.MaxProduceRequestsInflightPerBroker(5),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
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

func franzConsume() int64 {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(*brokers),
		kgo.ConsumerGroup(fmt.Sprintf("%s-franz-go", *topic)),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.FetchMaxBytes(50<<20),
	)
	if err != nil {
		fail(err)
	}
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
