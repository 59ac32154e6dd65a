# The FIFO event queue and its FIFO dead-letter queue, both encrypted with a customer managed key.
#
# The workers dead-letter an event themselves (permanent error, or the last of EVENTFLEET_MAX_ATTEMPTS attempts,
# counted in its retry record, including attempts whose worker died) by sending it to the DLQ. SQS's redrive
# after `max_receive_count` receives is a backstop for deliveries that cannot record anything (the store is
# down). It sits far above the attempts because SQS also counts a receive of a message that waited, untried,
# behind failing ones of its group.

resource "aws_sqs_queue" "dead_letter" {
  name                              = var.dead_letter_name
  fifo_queue                        = true
  content_based_deduplication       = false
  deduplication_scope               = "queue"
  fifo_throughput_limit             = "perQueue"
  message_retention_seconds         = var.dead_letter_retention_seconds
  visibility_timeout_seconds        = var.visibility_timeout_seconds
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds
  tags                              = var.tags
}

resource "aws_sqs_queue" "this" {
  name                              = var.name
  fifo_queue                        = true
  content_based_deduplication       = false
  deduplication_scope               = "queue"
  fifo_throughput_limit             = "perQueue"
  message_retention_seconds         = var.message_retention_seconds
  visibility_timeout_seconds        = var.visibility_timeout_seconds
  receive_wait_time_seconds         = var.receive_wait_time_seconds
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_data_key_reuse_period_seconds

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.visibility_timeout_seconds > var.handler_timeout_seconds + var.heartbeat_margin_seconds
      error_message = "visibility_timeout_seconds must be above handler_timeout_seconds + heartbeat_margin_seconds, or a message reappears while its handler still runs."
    }
    precondition {
      condition     = endswith(var.name, ".fifo") && endswith(var.dead_letter_name, ".fifo")
      error_message = "FIFO queue names end in .fifo."
    }
  }
}

# Only the event queue may use the DLQ as its dead-letter target.
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this.arn]
  })
}

# Both queues refuse requests that do not use TLS. Access itself is granted by the task roles' IAM policies.
module "tls_only" {
  source = "../tls_only"
  for_each = {
    events       = aws_sqs_queue.this.arn
    dead_letters = aws_sqs_queue.dead_letter.arn
  }

  actions   = ["sqs:*"]
  resources = [each.value]
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.this.id
  policy    = module.tls_only["events"].json
}

resource "aws_sqs_queue_policy" "dead_letters" {
  queue_url = aws_sqs_queue.dead_letter.id
  policy    = module.tls_only["dead_letters"].json
}
