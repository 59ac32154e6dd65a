# The public edge of the ingress: an internet-facing ALB on 443 only (TLS 1.3/1.2 FIPS policy), its access-log
# bucket, the target group the ingress tasks register in (health check GET /version every 10 s), and a WAFv2 web
# ACL with AWS managed rules, a per-IP rate rule and logging.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_elb_service_account" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # Paths whose bodies are sender payloads (webhook JSON, Slack forms, SNS messages), where the core rule set's
  # body rules misfire: a GitHub push is larger than 8 KB (SizeRestrictions_BODY) and alert texts routinely carry
  # URLs, paths and markup (GenericRFI/GenericLFI/CrossSiteScripting/EC2MetaDataSSRF _BODY).
  sender_path_prefixes = ["/hooks/", "/slack/", "/sns"]

  core_rule_set_body_rules = {
    SizeRestrictions_BODY   = "awswaf:managed:aws:core-rule-set:SizeRestrictions_Body"
    CrossSiteScripting_BODY = "awswaf:managed:aws:core-rule-set:CrossSiteScripting_Body"
    GenericLFI_BODY         = "awswaf:managed:aws:core-rule-set:GenericLFI_Body"
    GenericRFI_BODY         = "awswaf:managed:aws:core-rule-set:GenericRFI_Body"
    EC2MetaDataSSRF_BODY    = "awswaf:managed:aws:core-rule-set:EC2MetaDataSSRF_Body"
  }

  access_log_prefix = "alb"
}

# Access logs ------------------------------------------------------------------------------------------------------

module "access_logs" {
  source = "../log_bucket"

  name           = "${var.name}-alb-logs-${local.account_id}-${data.aws_region.current.name}"
  retention_days = var.access_log_retention_days
  tags           = var.tags

  # Regions opened before August 2022 deliver as the regional ELB account; newer ones as the log-delivery service.
  deliveries = [
    {
      sid            = "ElbAccountDelivers"
      principal_type = "AWS"
      principals     = [data.aws_elb_service_account.current.arn]
      prefix         = "${local.access_log_prefix}/AWSLogs/${local.account_id}/"
    },
    {
      sid            = "LogDeliveryServiceDelivers"
      principal_type = "Service"
      principals     = ["logdelivery.elasticloadbalancing.amazonaws.com"]
      prefix         = "${local.access_log_prefix}/AWSLogs/${local.account_id}/"
    },
  ]
}

# These resources were this module's own before the log_bucket module; existing state moves, nothing is replaced.
moved {
  from = aws_s3_bucket.access_logs
  to   = module.access_logs.aws_s3_bucket.this
}

moved {
  from = aws_s3_bucket_ownership_controls.access_logs
  to   = module.access_logs.aws_s3_bucket_ownership_controls.this
}

moved {
  from = aws_s3_bucket_public_access_block.access_logs
  to   = module.access_logs.aws_s3_bucket_public_access_block.this
}

moved {
  from = aws_s3_bucket_versioning.access_logs
  to   = module.access_logs.aws_s3_bucket_versioning.this
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.access_logs
  to   = module.access_logs.aws_s3_bucket_server_side_encryption_configuration.this
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.access_logs
  to   = module.access_logs.aws_s3_bucket_lifecycle_configuration.this
}

moved {
  from = aws_s3_bucket_policy.access_logs
  to   = module.access_logs.aws_s3_bucket_policy.this
}


# Load balancer ----------------------------------------------------------------------------------------------------

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Load balancer of ${var.name}: HTTPS in from senders, HTTP out to the ingress tasks"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-alb" })
}

resource "aws_vpc_security_group_ingress_rule" "https_v4" {
  for_each = toset(var.allowed_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from senders (Slack, GitHub, SNS, webhook sources)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "to_targets" {
  security_group_id            = aws_security_group.alb.id
  description                  = "HTTP to the ingress tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.target_port
  to_port                      = var.target_port
  referenced_security_group_id = var.target_security_group_id
}

resource "aws_lb" "this" {
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  desync_mitigation_mode     = "defensive"
  idle_timeout               = 60
  enable_http2               = true
  # The ingress takes the client IP from the last X-Forwarded-For entry (EVENTFLEET_TRUST_FORWARDED_FOR).
  xff_header_processing_mode = "append"

  access_logs {
    bucket  = module.access_logs.id
    prefix  = local.access_log_prefix
    enabled = true
  }

  tags = var.tags

  depends_on = [module.access_logs]
}

resource "aws_lb_target_group" "ingress" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the load balancer; the ingress container speaks plain HTTP on a private subnet, reachable only from the load balancer's security group.
  name                 = "${var.name}-ingress"
  target_type          = "ip"
  protocol             = "HTTP"
  port                 = var.target_port
  vpc_id               = var.vpc_id
  deregistration_delay = var.deregistration_delay_seconds

  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/version"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ingress.arn
  }

  tags = var.tags
}

# Prometheus metrics are for the inside (scrapers in the VPC), not for the internet.
resource "aws_lb_listener_rule" "hide_metrics" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/metrics", "/metrics/*"]
    }
  }

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = "{\"error\":\"not_found\"}"
    }
  }

  tags = var.tags
}

# WAF --------------------------------------------------------------------------------------------------------------

resource "aws_wafv2_web_acl" "this" {
  name        = var.name
  description = "Edge rules of the ${var.name} ingress"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "aws-ip-reputation"
    priority = 10

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAmazonIpReputationList"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ip-reputation"
      sampled_requests_enabled   = true
    }
  }

  # VPNs, Tor and open proxies are blocked. Its HostingProviderIPList rule only counts: the senders themselves
  # (Slack, GitHub, SNS, monitoring services) run on cloud providers.
  rule {
    name     = "aws-anonymous-ip"
    priority = 15

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"

        rule_action_override {
          name = "HostingProviderIPList"
          action_to_use {
            count {}
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  # A per-IP budget, enforced before a request costs a task anything, outside the sender paths. On those, senders
  # sign their requests and some cannot retry (GitHub never does; SNS gives up after its policy, and an alarm
  # storm comes from a handful of AWS addresses), which the WAF cannot tell from a flood: there the ingress counts
  # only what fails verification (EVENTFLEET_RATE_LIMIT_PER_IP and the other failure budgets).
  rule {
    name     = "rate-per-ip"
    priority = 20

    action {
      block {
        custom_response {
          response_code = 429
        }
      }
    }

    statement {
      rate_based_statement {
        limit                 = var.rate_limit_per_ip
        aggregate_key_type    = "IP"
        evaluation_window_sec = 300

        scope_down_statement {
          not_statement {
            statement {
              or_statement {
                dynamic "statement" {
                  for_each = local.sender_path_prefixes
                  content {
                    byte_match_statement {
                      search_string         = statement.value
                      positional_constraint = "STARTS_WITH"

                      field_to_match {
                        uri_path {}
                      }

                      text_transformation {
                        priority = 0
                        type     = "NONE"
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate-per-ip"
      sampled_requests_enabled   = true
    }
  }

  # Core rule set, with its body rules switched to Count: they label the request instead of blocking it, and the
  # next rule blocks on those labels everywhere except on the sender paths.
  rule {
    name     = "aws-common"
    priority = 30

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"

        dynamic "rule_action_override" {
          for_each = local.core_rule_set_body_rules
          content {
            name = rule_action_override.key
            action_to_use {
              count {}
            }
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common-body-outside-sender-paths"
    priority = 31

    action {
      block {}
    }

    statement {
      and_statement {
        statement {
          or_statement {
            dynamic "statement" {
              for_each = local.core_rule_set_body_rules
              content {
                label_match_statement {
                  scope = "LABEL"
                  key   = statement.value
                }
              }
            }
          }
        }

        statement {
          not_statement {
            statement {
              or_statement {
                dynamic "statement" {
                  for_each = local.sender_path_prefixes
                  content {
                    byte_match_statement {
                      search_string         = statement.value
                      positional_constraint = "STARTS_WITH"

                      field_to_match {
                        uri_path {}
                      }

                      text_transformation {
                        priority = 0
                        type     = "NONE"
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common-body-outside-sender-paths"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 40

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-linux"
    priority = 50

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesLinuxRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-linux"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name
    sampled_requests_enabled   = true
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_association" "alb" {
  resource_arn = aws_lb.this.arn
  web_acl_arn  = aws_wafv2_web_acl.this.arn
}

# WAF logs: only requests a rule blocked or counted (allowed traffic is in the ALB access logs). The group name
# must start with aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:WAF findings are kept log_retention_days (30 by default) like the other operational logs; the ALB access logs in S3 keep the request history longer.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "waf_logs" {
  statement {
    sid       = "WafDeliversLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.waf.arn}:*"]

    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:logs:${data.aws_region.current.name}:${local.account_id}:*"]
    }
  }
}

resource "aws_cloudwatch_log_resource_policy" "waf" {
  policy_name     = "${var.name}-waf-logs"
  policy_document = data.aws_iam_policy_document.waf_logs.json
}

resource "aws_wafv2_web_acl_logging_configuration" "this" {
  resource_arn            = aws_wafv2_web_acl.this.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]

  # Signatures are not secrets, but they have no business in logs either.
  redacted_fields {
    single_header {
      name = "x-slack-signature"
    }
  }

  redacted_fields {
    single_header {
      name = "x-hub-signature-256"
    }
  }

  redacted_fields {
    single_header {
      name = "authorization"
    }
  }

  logging_filter {
    default_behavior = "DROP"

    filter {
      behavior    = "KEEP"
      requirement = "MEETS_ANY"

      condition {
        action_condition {
          action = "BLOCK"
        }
      }

      condition {
        action_condition {
          action = "COUNT"
        }
      }
    }
  }

  depends_on = [aws_cloudwatch_log_resource_policy.waf]
}
