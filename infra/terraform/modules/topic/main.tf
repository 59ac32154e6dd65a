# An SNS topic encrypted with a customer managed key, a topic policy (account-only publishing, TLS only, and
# optionally CloudWatch alarms of this account), and extra subscriptions. The alarm topic's HTTPS subscription to
# the ingress is made in the root configuration, after the services are up.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_sns_topic" "this" {
  name              = var.name
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

module "tls_only" {
  source    = "../tls_only"
  actions   = ["sns:Publish"]
  resources = [aws_sns_topic.this.arn]
}

data "aws_iam_policy_document" "topic" {
  source_policy_documents = [module.tls_only.json]

  statement {
    sid       = "AccountPublishesAndSubscribes"
    effect    = "Allow"
    actions   = ["sns:Publish", "sns:Subscribe", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = var.allow_cloudwatch_alarms ? [1] : []
    content {
      sid       = "CloudWatchAlarmsOfThisAccountPublish"
      effect    = "Allow"
      actions   = ["sns:Publish"]
      resources = [aws_sns_topic.this.arn]

      principals {
        type        = "Service"
        identifiers = ["cloudwatch.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [data.aws_caller_identity.current.account_id]
      }

      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = ["arn:${data.aws_partition.current.partition}:cloudwatch:*:${data.aws_caller_identity.current.account_id}:alarm:*"]
      }
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

# Other subscribers (an e-mail list, a pager: something that does not depend on the fleet being up).
resource "aws_sns_topic_subscription" "extra" {
  for_each = { for subscription in var.extra_subscriptions : "${subscription.protocol}:${subscription.endpoint}" => subscription }

  topic_arn = aws_sns_topic.this.arn
  protocol  = each.value.protocol
  endpoint  = each.value.endpoint
}
