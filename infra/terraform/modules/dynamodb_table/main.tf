# One DynamoDB table: on-demand, point-in-time recovery, a customer managed key, TTL on the attribute the code
# writes (when the table has one), deletion protection. Key names and types come from the caller, who takes them
# from the code's own description (`eventfleet tables describe --json`; infra/tests/check_names.py compares).

locals {
  # Every key attribute of the table and its indexes, once (a name used with two types fails here, at plan).
  key_attributes = concat(
    [var.hash_key],
    var.range_key == null ? [] : [var.range_key],
    flatten([for index in var.global_secondary_indexes : concat(
      [index.hash_key],
      index.range_key == null ? [] : [index.range_key],
    )]),
  )
  attributes = { for attribute in local.key_attributes : attribute.name => attribute.type... }
}

resource "aws_dynamodb_table" "this" {
  name                        = var.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = var.hash_key.name
  range_key                   = try(var.range_key.name, null)
  deletion_protection_enabled = var.deletion_protection

  dynamic "attribute" {
    for_each = local.attributes
    content {
      name = attribute.key
      type = one(distinct(attribute.value))
    }
  }

  dynamic "global_secondary_index" {
    for_each = var.global_secondary_indexes
    content {
      name            = global_secondary_index.value.name
      hash_key        = global_secondary_index.value.hash_key.name
      range_key       = try(global_secondary_index.value.range_key.name, null)
      projection_type = global_secondary_index.value.projection
    }
  }

  # Only a table with a TTL attribute gets the block: `enabled = false` with no attribute name is refused by the
  # DynamoDB API on updates.
  dynamic "ttl" {
    for_each = var.ttl_attribute == null ? [] : [var.ttl_attribute]
    content {
      enabled        = true
      attribute_name = ttl.value
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = var.tags
}
