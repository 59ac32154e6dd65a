# The eventfleet fleet on AWS: ingress and workers on ECS Fargate behind an ALB with WAF, the FIFO queue and its
# DLQ, the DynamoDB ledger, the SNS topics, logs, dashboard and alarms.
#
# Queue, table and topic names, key schemas and TTL attributes are the code's: `eventfleet tables describe --json`
# prints them for a prefix, and infra/tests/check_names.py (run by scripts/check-infra) fails when this file
# disagrees. Change both together.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(var.tags, {
    Project   = "eventfleet"
    Fleet     = var.name_prefix
    ManagedBy = "terraform"
  })

  public_url = "https://${var.domain_name}"
  image      = "${module.image_repository.url}:${var.image_tag}"

  # Environment of both processes. EVENTFLEET_NAME_PREFIX makes the code derive exactly the names below.
  common_environment = {
    EVENTFLEET_BACKEND              = "aws"
    EVENTFLEET_NAME_PREFIX          = var.name_prefix
    EVENTFLEET_CLOUDWATCH_NAMESPACE = var.metrics_namespace
    EVENTFLEET_LOG_FORMAT           = "json"
    EVENTFLEET_LOG                  = var.log_filter
    EVENTFLEET_MAX_ATTEMPTS         = tostring(var.max_attempts)
    EVENTFLEET_MAX_RECEIVE_COUNT    = tostring(var.max_receive_count)
    EVENTFLEET_VISIBILITY_TIMEOUT_S = tostring(var.visibility_timeout_s)
    EVENTFLEET_HANDLER_TIMEOUT_S    = tostring(var.handler_timeout_s)
    EVENTFLEET_DRAIN_TIMEOUT_S      = tostring(var.drain_timeout_s)
    EVENTFLEET_DEFAULT_CHANNEL      = var.default_channel
    # The root file system is read-only; /tmp is the task's scratch volume (nothing is kept there on AWS).
    EVENTFLEET_DATA_DIR = "/tmp/eventfleet"
    AWS_REGION          = var.region
    # The queues' URLs, so the processes need no GetQueueUrl at start.
    EVENTFLEET_QUEUE_URL = module.events_queue.queue_url
    EVENTFLEET_DLQ_URL   = module.events_queue.dead_letter_url
  }
  otel_environment = var.otel_exporter_otlp_endpoint == null ? {} : {
    OTEL_EXPORTER_OTLP_ENDPOINT = var.otel_exporter_otlp_endpoint
  }

  # SNS topics the fleet accepts, and the Slack channel of each.
  sns_topic_channels = merge({ (module.alarm_topic.arn) = var.alarm_channel }, var.extra_sns_topics)

  ingress_port = 8080
  worker_port  = 9091
}

# Keys -------------------------------------------------------------------------------------------------------------

module "queue_key" {
  source      = "../modules/kms_key"
  alias       = "${var.name_prefix}-queue"
  description = "eventfleet ${var.name_prefix}: SQS event queue and DLQ"
  tags        = local.tags
}

module "tables_key" {
  source      = "../modules/kms_key"
  alias       = "${var.name_prefix}-tables"
  description = "eventfleet ${var.name_prefix}: DynamoDB tables (idempotency, audit, retries, webhooks, alarm threads, event log)"
  tags        = local.tags
}

module "topics_key" {
  source      = "../modules/kms_key"
  alias       = "${var.name_prefix}-topics"
  description = "eventfleet ${var.name_prefix}: SNS alarm and ops topics"
  tags        = local.tags

  service_statements = [{
    sid      = "CloudWatchAlarmsPublishToEncryptedTopics"
    services = ["cloudwatch.amazonaws.com"]
    actions  = ["kms:Decrypt", "kms:GenerateDataKey*"]
    conditions = [{
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }]
  }]
}

module "logs_key" {
  source      = "../modules/kms_key"
  alias       = "${var.name_prefix}-logs"
  description = "eventfleet ${var.name_prefix}: CloudWatch log groups (services, WAF)"
  tags        = local.tags

  service_statements = [{
    sid      = "CloudWatchLogsOfThisAccount"
    services = ["logs.${var.region}.amazonaws.com"]
    actions  = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    conditions = [{
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
    }]
  }]
}

# Queue ------------------------------------------------------------------------------------------------------------

module "events_queue" {
  source = "../modules/queue"

  name                       = "${var.name_prefix}-events.fifo"
  dead_letter_name           = "${var.name_prefix}-events-dlq.fifo"
  max_receive_count          = var.max_receive_count
  visibility_timeout_seconds = var.visibility_timeout_s
  handler_timeout_seconds    = var.handler_timeout_s
  heartbeat_margin_seconds   = var.heartbeat_margin_s
  message_retention_seconds  = var.message_retention_s
  kms_key_arn                = module.queue_key.arn
  tags                       = local.tags
}

# Tables (the ledger) ----------------------------------------------------------------------------------------------

module "idempotency_table" {
  source = "../modules/dynamodb_table"

  name          = "${var.name_prefix}-idempotency"
  hash_key      = { name = "key", type = "S" }
  ttl_attribute = "ttl"
  global_secondary_indexes = [
    {
      name       = "by_event_id"
      hash_key   = { name = "event_id", type = "S" }
      projection = "ALL"
    },
    {
      # Operators find an event by the sender's own id (the key's text after its last ':').
      name       = "by_sender_id"
      hash_key   = { name = "sender_id", type = "S" }
      projection = "KEYS_ONLY"
    },
  ]
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "audit_table" {
  source = "../modules/dynamodb_table"

  name                = "${var.name_prefix}-audit"
  hash_key            = { name = "event_id", type = "S" }
  range_key           = { name = "at_seq", type = "S" }
  ttl_attribute       = "ttl"
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "retries_table" {
  source = "../modules/dynamodb_table"

  name                = "${var.name_prefix}-retries"
  hash_key            = { name = "event_id", type = "S" }
  ttl_attribute       = "ttl"
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "webhooks_table" {
  source = "../modules/dynamodb_table"

  name                = "${var.name_prefix}-webhooks"
  hash_key            = { name = "id", type = "S" }
  ttl_attribute       = null
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "alarm_threads_table" {
  source = "../modules/dynamodb_table"

  # Alarms' Slack threads (by AlarmArn) and channels' posting states (channel#<name>), versioned documents.
  name                = "${var.name_prefix}-alarm-threads"
  hash_key            = { name = "alarm_arn", type = "S" }
  ttl_attribute       = "ttl"
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "event_log_table" {
  source = "../modules/dynamodb_table"

  # The event log: every accepted envelope, kept EVENTFLEET_RETENTION_H after it is done (TTL a day past that),
  # found by time through by_hour (partition: the hour of receipt since the epoch; sort: receipt time and event id).
  name          = "${var.name_prefix}-event-log"
  hash_key      = { name = "event_id", type = "S" }
  ttl_attribute = "ttl"
  global_secondary_indexes = [
    {
      name       = "by_hour"
      hash_key   = { name = "hour", type = "S" }
      range_key  = { name = "at", type = "S" }
      projection = "KEYS_ONLY"
    },
  ]
  kms_key_arn         = module.tables_key.arn
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

# Topics -----------------------------------------------------------------------------------------------------------

module "alarm_topic" {
  source = "../modules/topic"

  name                    = "${var.name_prefix}-alarms"
  kms_key_arn             = module.topics_key.arn
  allow_cloudwatch_alarms = true
  extra_subscriptions     = var.alarm_extra_subscriptions
  tags                    = local.tags
}

module "ops_topic" {
  source = "../modules/topic"

  name                = "${var.name_prefix}-ops"
  kms_key_arn         = module.topics_key.arn
  extra_subscriptions = var.ops_subscriptions
  tags                = local.tags
}

# The alarm topic delivers to the ingress's /sns, which verifies the signature, accepts only allow-listed topics
# and enqueues; a worker confirms the subscription (ConfirmSubscription) and posts alarms to var.alarm_channel.
# Made after both services are up, so the SubscriptionConfirmation finds someone to confirm it.
resource "aws_sns_topic_subscription" "alarms_to_ingress" {
  count = var.subscribe_ingress_to_alarm_topic ? 1 : 0

  topic_arn                       = module.alarm_topic.arn
  protocol                        = "https"
  endpoint                        = "${local.public_url}/sns"
  endpoint_auto_confirms          = false
  raw_message_delivery            = false
  confirmation_timeout_in_minutes = 1

  # SNS's default is 3 tries 20 s apart; this keeps retrying for about 45 minutes (SNS caps a policy at one hour)
  # so a deploy or a short ingress outage loses no alarm.
  delivery_policy = jsonencode({
    healthyRetryPolicy = {
      minDelayTarget     = 20
      maxDelayTarget     = 300
      numRetries         = 15
      numNoDelayRetries  = 0
      numMinDelayRetries = 2
      numMaxDelayRetries = 6
      backoffFunction    = "exponential"
    }
    throttlePolicy = {
      maxReceivesPerSecond = 10
    }
  })

  depends_on = [module.ingress, module.worker, aws_route53_record.ingress]
}

# Image, cluster, edge ---------------------------------------------------------------------------------------------

module "image_repository" {
  source = "../modules/image_repository"
  name   = var.name_prefix
  tags   = local.tags
}

module "cluster" {
  source = "../modules/ecs_cluster"
  name   = var.name_prefix
  tags   = local.tags
}

module "edge" {
  source = "../modules/alb_waf"

  name                      = var.name_prefix
  vpc_id                    = var.vpc_id
  public_subnet_ids         = var.public_subnet_ids
  allowed_cidrs             = var.allowed_ingress_cidrs
  certificate_arn           = var.certificate_arn
  target_port               = local.ingress_port
  target_security_group_id  = module.ingress.security_group_id
  rate_limit_per_ip         = var.waf_rate_limit_per_ip
  deletion_protection       = var.deletion_protection
  access_log_retention_days = var.alb_access_log_retention_days
  log_retention_days        = var.log_retention_days
  logs_kms_key_arn          = module.logs_key.arn
  tags                      = local.tags
}

resource "aws_route53_record" "ingress" {
  count = var.route53_zone_id == null ? 0 : 1

  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = module.edge.alb_dns_name
    zone_id                = module.edge.alb_zone_id
    evaluate_target_health = true
  }
}

# IAM (task roles) -------------------------------------------------------------------------------------------------

module "iam" {
  source = "../modules/iam"

  name_prefix       = var.name_prefix
  queue_arn         = module.events_queue.queue_arn
  dead_letter_arn   = module.events_queue.dead_letter_arn
  queue_kms_key_arn = module.queue_key.arn
  table_arns = {
    idempotency   = module.idempotency_table.arn
    audit         = module.audit_table.arn
    retries       = module.retries_table.arn
    webhooks      = module.webhooks_table.arn
    alarm_threads = module.alarm_threads_table.arn
    event_log     = module.event_log_table.arn
  }
  event_log_index_arns            = module.event_log_table.index_arns
  idempotency_index_arns          = module.idempotency_table.index_arns
  tables_kms_key_arn              = module.tables_key.arn
  ops_topic_arn                   = module.ops_topic.arn
  confirm_subscription_topic_arns = keys(local.sns_topic_channels)
  topics_kms_key_arn              = module.topics_key.arn
  metrics_namespace               = var.metrics_namespace
  console_enabled                 = var.console != null
  tags                            = local.tags
}

# Services ---------------------------------------------------------------------------------------------------------

module "ingress" {
  source = "../modules/ecs_service"

  name_prefix          = var.name_prefix
  name                 = "ingress"
  cluster_arn          = module.cluster.arn
  cluster_name         = module.cluster.name
  image                = local.image
  image_repository_arn = module.image_repository.arn
  command              = ["ingress"]
  cpu                  = var.ingress_cpu
  memory               = var.ingress_memory
  cpu_architecture     = var.cpu_architecture
  container_ports      = [local.ingress_port]
  health_check_command = ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "3", "http://127.0.0.1:${local.ingress_port}/health"]
  # The ingress drains its requests in flight for drain_timeout_s too; ECS kills stopTimeout after SIGTERM.
  stop_timeout_seconds = var.drain_timeout_s + 5
  task_role_arn        = module.iam.ingress_task_role_arn

  environment = merge(local.common_environment, local.otel_environment, {
    EVENTFLEET_LISTEN                     = "0.0.0.0:${local.ingress_port}"
    EVENTFLEET_PUBLIC_URL                 = local.public_url
    EVENTFLEET_SNS_ALLOWED_TOPICS         = join(",", keys(local.sns_topic_channels))
    EVENTFLEET_TRUST_FORWARDED_FOR        = "true"
    EVENTFLEET_RATE_LIMIT_PER_IP          = tostring(var.waf_rate_limit_per_ip)
    EVENTFLEET_RATE_LIMIT_PER_IP_WINDOW_S = "300"
    EVENTFLEET_BODY_LIMIT_BYTES           = tostring(var.ingress_body_limit_bytes)
    }, var.schedules_file == null ? {} : {
    # Every ingress task evaluates the schedules; the idempotency table keeps one event per tick.
    EVENTFLEET_SCHEDULES_FILE = var.schedules_file
    }, var.slack_app_token_arn == null ? {} : {
    # Each task opens its own connections; Slack sends each envelope to one of them.
    EVENTFLEET_SLACK_SOCKET_CONNECTIONS = tostring(var.slack_socket_connections)
  })
  secrets = merge({
    EVENTFLEET_SLACK_SIGNING_SECRET = var.slack_signing_secret_arn
    }, var.slack_app_token_arn == null ? {} : {
    EVENTFLEET_SLACK_APP_TOKEN = var.slack_app_token_arn
  })
  secrets_kms_key_arns = var.secrets_kms_key_arns

  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  egress_https_cidrs = var.task_egress_cidrs
  load_balancer = {
    target_group_arn  = module.edge.target_group_arn
    container_port    = local.ingress_port
    security_group_id = module.edge.security_group_id
  }

  min_count             = var.ingress_count
  max_count             = var.ingress_count
  wait_for_steady_state = var.wait_for_steady_state

  log_group_name     = "/ecs/${var.name_prefix}/ingress"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.logs_key.arn
  tags               = local.tags
}

module "worker" {
  source = "../modules/ecs_service"

  name_prefix          = var.name_prefix
  name                 = "worker"
  cluster_arn          = module.cluster.arn
  cluster_name         = module.cluster.name
  image                = local.image
  image_repository_arn = module.image_repository.arn
  command              = ["worker"]
  cpu                  = var.worker_cpu
  memory               = var.worker_memory
  cpu_architecture     = var.cpu_architecture
  health_check_command = ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "3", "http://127.0.0.1:${local.worker_port}/health"]
  # ECS sends SIGKILL stopTimeout seconds after SIGTERM; the worker drains for drain_timeout_s, then gives back
  # what it has not started. The margin covers the give-back and the exit.
  stop_timeout_seconds = var.drain_timeout_s + 10
  task_role_arn        = module.iam.worker_task_role_arn

  environment = merge(local.common_environment, local.otel_environment, {
    EVENTFLEET_METRICS_LISTEN     = "0.0.0.0:${local.worker_port}"
    EVENTFLEET_WORKER_CONCURRENCY = tostring(var.worker_concurrency)
    EVENTFLEET_OPS_TOPIC_ARN      = module.ops_topic.arn
    EVENTFLEET_SNS_TOPIC_CHANNELS = join(",", [for arn, channel in local.sns_topic_channels : "${arn}=${channel}"])
  })
  secrets = {
    EVENTFLEET_SLACK_BOT_TOKEN = var.slack_bot_token_arn
  }
  secrets_kms_key_arns = var.secrets_kms_key_arns

  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  egress_https_cidrs = var.task_egress_cidrs

  min_count = var.worker_min_count
  max_count = var.worker_max_count
  backlog_scaling = {
    queue_name                 = module.events_queue.queue_name
    target_backlog_per_task    = var.worker_backlog_per_task
    scale_in_cooldown_seconds  = var.worker_scale_in_cooldown_s
    scale_out_cooldown_seconds = var.worker_scale_out_cooldown_s
  }
  wait_for_steady_state = var.wait_for_steady_state

  log_group_name     = "/ecs/${var.name_prefix}/worker"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.logs_key.arn
  tags               = local.tags
}

# Dashboard and alarms ---------------------------------------------------------------------------------------------

module "observability" {
  source = "../modules/observability"

  name_prefix                          = var.name_prefix
  metrics_namespace                    = var.metrics_namespace
  alarm_topic_arn                      = module.alarm_topic.arn
  queue_name                           = module.events_queue.queue_name
  dead_letter_queue_name               = module.events_queue.dead_letter_name
  alb_arn_suffix                       = module.edge.alb_arn_suffix
  target_group_arn_suffix              = module.edge.target_group_arn_suffix
  cluster_name                         = module.cluster.name
  ingress_service_name                 = module.ingress.service_name
  worker_service_name                  = module.worker.service_name
  worker_min_count                     = var.worker_min_count
  oldest_message_age_threshold_seconds = var.oldest_message_age_alarm_s
  error_rate_threshold_percent         = var.ingress_5xx_alarm_percent
  p95_latency_threshold_seconds        = var.ingress_p95_alarm_s
  tags                                 = local.tags
}

# Terraform before 1.9 cannot compare two variables in a validation block; the workers refuse the same settings at
# start-up, this stops them at plan.
resource "terraform_data" "retry_budget" {
  input = { max_attempts = var.max_attempts, max_receive_count = var.max_receive_count }

  lifecycle {
    precondition {
      condition     = var.max_receive_count >= 2 * var.max_attempts
      error_message = "max_receive_count must be at least twice max_attempts: a message waiting behind a failing one of its group is received with it each time, so the queue's count runs ahead of its own attempts."
    }
  }
}

# Slack allows an app 10 Socket Mode connections in all; past them the tasks' slots wait on too_many_websockets.
resource "terraform_data" "socket_mode_connections" {
  input = { ingress_count = var.ingress_count, connections = var.slack_socket_connections }

  lifecycle {
    precondition {
      condition     = var.slack_app_token_arn == null || var.ingress_count * var.slack_socket_connections <= 10
      error_message = "ingress_count x slack_socket_connections must be at most 10: Slack allows an app 10 Socket Mode connections."
    }
  }
}
