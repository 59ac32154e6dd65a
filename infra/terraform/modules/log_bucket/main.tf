# A bucket that AWS services deliver logs into (S3 server access logs, load balancer access logs): private,
# owner-enforced, versioned, SSE-S3, expiring, reachable over TLS only, and writable by exactly the deliveries
# named, each under its own prefix.

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_145:AWS log deliveries (S3 server access logs, ALB access logs) write only to buckets encrypted with SSE-S3 (AES256), not SSE-KMS.
  #checkov:skip=CKV_AWS_18:This bucket is itself a log destination; logging its accesses would need another log bucket, and so on.
  #checkov:skip=CKV_AWS_144:Access logs are diagnostic data with a fixed expiry; cross-region replication is not worth its cost here.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object-created events of access logs; they are read on demand (Athena, S3 Select).
  bucket        = var.name
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "expire"
    status = "Enabled"

    filter {}

    expiration {
      days = var.retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

module "tls_only" {
  source    = "../tls_only"
  actions   = ["s3:*"]
  resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
}

data "aws_iam_policy_document" "this" {
  source_policy_documents = [module.tls_only.json]

  dynamic "statement" {
    for_each = var.deliveries
    content {
      sid       = statement.value.sid
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.this.arn}/${statement.value.prefix}*"]

      principals {
        type        = statement.value.principal_type
        identifiers = statement.value.principals
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

resource "aws_s3_bucket_policy" "this" {
  bucket     = aws_s3_bucket.this.id
  policy     = data.aws_iam_policy_document.this.json
  depends_on = [aws_s3_bucket_public_access_block.this]
}
