# A customer managed KMS key with yearly rotation. The account root statement delegates use of the key to IAM
# policies (the task roles grant themselves exactly the operations they need); service principals that must use
# the key on their own behalf (CloudWatch Logs, CloudWatch alarms publishing to an encrypted topic) get a
# statement each, scoped by conditions.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "key" {
  # This document is a key policy, not an identity policy: its Resource "*" means "this key" and nothing else, and
  # the account-root statement is AWS's default key policy statement, which grants nothing by itself but lets IAM
  # policies (the task roles' explicit, per-action statements) grant use of the key.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" denotes the key the policy is attached to; no other resource can be named.
  #checkov:skip=CKV_AWS_111:Key policy: the account-root statement delegates to IAM (AWS's default key policy); write access is constrained by the roles' policies.
  #checkov:skip=CKV_AWS_109:Key policy: the account-root statement delegates key administration to IAM (AWS's default key policy), so the key is never unmanageable.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = var.service_statements
    content {
      sid       = statement.value.sid
      effect    = "Allow"
      actions   = statement.value.actions
      resources = ["*"]

      principals {
        type        = "Service"
        identifiers = statement.value.services
      }

      dynamic "condition" {
        for_each = statement.value.conditions
        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
