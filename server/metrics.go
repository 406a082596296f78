package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series, all named ddpm_*, in a
// registry of their own (no global state). Every label value comes from a
// closed set, never from a request as sent: a client cannot grow the
// number of series.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec   // ddpm_http_requests_total{route,method,code}
	latency      *prometheus.HistogramVec // ddpm_http_request_duration_seconds{route}
	queueDepth   prometheus.Gauge         // ddpm_queue_depth
	images       prometheus.Counter       // ddpm_images_generated_total
	steps        prometheus.Counter       // ddpm_denoising_steps_total
	imageSteps   prometheus.Counter       // ddpm_image_denoising_steps_total
	batchSize    prometheus.Histogram     // ddpm_batch_size
	batchSeconds prometheus.Histogram     // ddpm_batch_duration_seconds
	jobs         *prometheus.CounterVec   // ddpm_jobs_total{state}
	rejected     *prometheus.CounterVec   // ddpm_rejected_total{reason}
	device       *prometheus.GaugeVec     // ddpm_device_info{device,model}
	ready        prometheus.Gauge         // ddpm_ready

	connsOpen     prometheus.Gauge       // ddpm_http_connections_open
	connsRejected *prometheus.CounterVec // ddpm_http_connections_rejected_total{reason}
}

func newMetrics(info ModelInfo, maxBatch int) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ddpm_http_requests_total", Help: "HTTP requests by route template (or \"unmatched\"), method (or \"other\") and status code.",
	}, []string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ddpm_http_request_duration_seconds", Help: "HTTP request latency by route template.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"route"})
	m.queueDepth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_queue_depth", Help: "Requests waiting for the device (not counting the running batch).",
	})
	m.images = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_images_generated_total", Help: "Images generated; rate() gives images per second.",
	})
	m.steps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_denoising_steps_total", Help: "Denoising steps run (one per batch per step); rate() gives steps per second.",
	})
	m.imageSteps = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ddpm_image_denoising_steps_total", Help: "Denoising steps times batch size.",
	})
	buckets := prometheus.LinearBuckets(1, 1, min(maxBatch, 64))
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ddpm_batch_size", Help: "Images per model batch.", Buckets: buckets,
	})
	m.batchSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ddpm_batch_duration_seconds", Help: "Wall time of one model batch.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
	})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ddpm_jobs_total", Help: "Finished generation requests by final state.",
	}, []string{"state"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ddpm_rejected_total", Help: "Generation requests turned away, by reason (queue_full, draining).",
	}, []string{"reason"})
	m.device = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ddpm_device_info", Help: "Always 1; labels name the device and the model.",
	}, []string{"device", "model"})
	m.ready = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_ready", Help: "1 while the server accepts new work, 0 while draining.",
	})
	m.connsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ddpm_http_connections_open", Help: "Open HTTP connections (under Serve).",
	})
	m.connsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ddpm_http_connections_rejected_total", Help: "Connections refused at accept, by cap (max_conns, max_conns_per_client).",
	}, []string{"reason"})
	m.reg.MustRegister(m.connsOpen, m.connsRejected, m.requests, m.latency, m.queueDepth, m.images, m.steps, m.imageSteps,
		m.batchSize, m.batchSeconds, m.jobs, m.rejected, m.device, m.ready,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.device.WithLabelValues(info.Device, info.Name).Set(1)
	m.ready.Set(1)
	return m
}
