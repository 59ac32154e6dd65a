# Task roles: what each process may do in AWS, action by action, on explicit ARNs. The lists follow the calls
# the code makes (docs/architecture.md, "AWS permissions"); anything else is denied by default.
#
# Also an operator policy (not attached to anything) for people who run `eventfleet dlq ...`, `events show`,
# `hooks ...` and `status` against the fleet with their own credentials.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  dynamodb_via_service = "dynamodb.${local.region}.amazonaws.com"
  # What DynamoDB asks KMS for on a caller's behalf when reading and writing a table under a customer managed key.
  dynamodb_kms_actions = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
}

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

# What every role of the fleet needs: the queue's key, the tables' key (only through DynamoDB), and the oldest
# message's age. Each role's policy starts from this one.
data "aws_iam_policy_document" "common" {
  statement {
    sid       = "QueueKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.queue_kms_key_arn]
  }

  statement {
    sid       = "OldestMessageAge"
    actions   = ["cloudwatch:GetMetricStatistics"]
    resources = ["*"] # no resource-level permissions; read-only (SQS's ApproximateAgeOfOldestMessage)
  }

  statement {
    sid       = "TablesKeyThroughDynamoDb"
    actions   = local.dynamodb_kms_actions
    resources = [var.tables_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.dynamodb_via_service]
    }
  }
}

# Ingress ----------------------------------------------------------------------------------------------------------

resource "aws_iam_role" "ingress" {
  name               = "${var.name_prefix}-ingress-task"
  description        = "eventfleet ingress: enqueue events, write idempotency and audit records, read hooks"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "ingress" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  statement {
    sid       = "EnqueueEvents"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [var.queue_arn]
  }

  # GET /ready reads the queue statistics, which include the DLQ's depth.
  statement {
    sid       = "DeadLetterDepth"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [var.dead_letter_arn]
  }

  statement {
    sid = "ClaimAndMarkIdempotencyKeys"
    # BatchGetItem: a schedule's look-back for its last tick at start-up, 100 keys a request.
    actions   = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:BatchGetItem"]
    resources = [var.table_arns.idempotency]
  }

  statement {
    sid       = "AppendAudit"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]
    resources = [var.table_arns.audit]
  }

  # The event log's item rides in the accept's BatchWriteItem with its audit lines.
  statement {
    sid       = "KeepEvents"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]
    resources = [var.table_arns.event_log]
  }

  statement {
    sid = "ReadHooksAndCountInvocations"
    # BatchGetItem: hook reads share requests. GetItem: what tasks of the release before read hooks with, while a
    # deploy replaces them; remove it in the release after.
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [var.table_arns.webhooks]
  }
}

resource "aws_iam_role_policy" "ingress" {
  name   = "eventfleet-ingress"
  role   = aws_iam_role.ingress.id
  policy = data.aws_iam_policy_document.ingress.json
}

# Workers ----------------------------------------------------------------------------------------------------------

resource "aws_iam_role" "worker" {
  name               = "${var.name_prefix}-worker-task"
  description        = "eventfleet workers: consume and dead-letter events, keep the ledger, publish metrics"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "worker" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  statement {
    sid = "ConsumeEvents"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:SendMessage", # replays put dead letters back on the event queue
    ]
    resources = [var.queue_arn]
  }

  statement {
    sid = "DeadLetters"
    actions = [
      "sqs:SendMessage",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [var.dead_letter_arn]
  }

  # A receive reads every received message's record and retry record in one BatchGetItem; a success's DONE is
  # a put batched (BatchWriteItem) with its audit line.
  statement {
    sid = "IdempotencyRecords"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:BatchGetItem",
      "dynamodb:PutItem",
      "dynamodb:BatchWriteItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
    ]
    resources = concat([var.table_arns.idempotency], var.idempotency_index_arns)
  }

  statement {
    sid       = "AuditTrail"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:Query"]
    resources = [var.table_arns.audit]
  }

  statement {
    sid       = "RetryRecords"
    actions   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan"]
    resources = [var.table_arns.retries]
  }

  statement {
    sid = "ReadHooks"
    # GetItem: what tasks of the release before read hooks with, while a deploy replaces them; remove it in the
    # release after.
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem"]
    resources = [var.table_arns.webhooks]
  }

  statement {
    sid       = "AlarmThreads"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [var.table_arns.alarm_threads]
  }

  statement {
    sid       = "OpsNotifications"
    actions   = ["sns:Publish"]
    resources = [var.ops_topic_arn]
  }

  statement {
    sid       = "ConfirmSubscriptions"
    actions   = ["sns:ConfirmSubscription"]
    resources = var.confirm_subscription_topic_arns
  }

  statement {
    sid       = "TopicsKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.topics_kms_key_arn]
  }

  statement {
    sid       = "PublishMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions; the namespace condition scopes it

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "eventfleet-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

# Operators --------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "operator" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  statement {
    sid       = "QueueStatusAndReplay"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [var.queue_arn]
  }

  statement {
    sid = "DeadLetterQueue"
    actions = [
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [var.dead_letter_arn]
  }

  statement {
    sid = "Ledger"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:BatchGetItem",
      "dynamodb:Query",
      "dynamodb:Scan",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:BatchWriteItem",
    ]
    resources = concat(values(var.table_arns), var.idempotency_index_arns, var.event_log_index_arns)
  }
}

resource "aws_iam_policy" "operator" {
  name        = "${var.name_prefix}-operator"
  description = "What `eventfleet dlq|events|hooks|status` need against the ${var.name_prefix} fleet; attach to the operators' role"
  policy      = data.aws_iam_policy_document.operator.json
  tags        = var.tags
}

# Console ----------------------------------------------------------------------------------------------------------

# `eventfleet console` does what an operator does (the operator policy), and reads the fleet's own metrics for its
# processed and failed rates.
resource "aws_iam_role" "console" {
  count = var.console_enabled ? 1 : 0

  name               = "${var.name_prefix}-console-task"
  description        = "eventfleet console: inspect, replay and purge dead letters, find events, manage hooks"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "console" {
  source_policy_documents = [data.aws_iam_policy_document.operator.json]

  statement {
    sid       = "FleetMetrics"
    actions   = ["cloudwatch:GetMetricData"]
    resources = ["*"] # no resource-level permissions; read-only
  }
}

resource "aws_iam_role_policy" "console" {
  count = var.console_enabled ? 1 : 0

  name   = "eventfleet-console"
  role   = aws_iam_role.console[0].id
  policy = data.aws_iam_policy_document.console.json
}
