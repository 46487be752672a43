//! End-to-end tests: the built `trustgate` binary against a real Kafka-protocol broker.
//! Every test has its own topics, consumer group, store and admin port.

mod common;

mod admin_auth;
mod amqp;
mod audit;
mod bench;
mod broker_down;
mod cli;
mod corrupt;
mod crash;
mod crash_loop;
mod crash_loop_sources;
mod dead_letter;
mod dead_letter_retry;
mod history;
mod late_detection;
mod no_lost_replies;
mod pipeline;
mod poller;
mod readiness;
mod recreated_topic;
mod replay;
mod replies;
mod resume_mid_batch;
mod secrets;
mod shutdown;
mod webhook;
mod webhook_trust;
mod whatif;
