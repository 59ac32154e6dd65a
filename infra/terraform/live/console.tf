# The operator console (`eventfleet console`), off by default (var.console = null). When on: its own HTTPS
# listener on the load balancer, whose one rule runs authenticate-oidc (the team's identity provider signs the
# operator in) before forwarding to the console tasks; the console trusts the identity headers the ALB adds
# (EVENTFLEET_CONSOLE_TRUST_ALB_OIDC) and writes the operator's e-mail into every audit line. The tasks' security
# group admits only the load balancer, which replaces any x-amzn-oidc-* header a client sends.

locals {
  console_enabled = var.console != null
  console_port    = 9092
}

resource "aws_lb_target_group" "console" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the load balancer; the console speaks plain HTTP on a private subnet, reachable only from the load balancer's security group.
  count = local.console_enabled ? 1 : 0

  name                 = "${var.name_prefix}-console"
  target_type          = "ip"
  protocol             = "HTTP"
  port                 = local.console_port
  vpc_id               = var.vpc_id
  deregistration_delay = 10

  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/health"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "console" {
  count = local.console_enabled ? 1 : 0

  load_balancer_arn = module.edge.alb_arn
  port              = var.console.listener_port
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04"
  certificate_arn   = var.certificate_arn

  # Nothing reaches the console but through the sign-in rule below.
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "text/plain"
      message_body = "not found"
      status_code  = "404"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener_rule" "console_oidc" {
  count = local.console_enabled ? 1 : 0

  listener_arn = aws_lb_listener.console[0].arn
  priority     = 1

  action {
    type = "authenticate-oidc"
    authenticate_oidc {
      issuer                     = var.console.oidc.issuer
      authorization_endpoint     = var.console.oidc.authorization_endpoint
      token_endpoint             = var.console.oidc.token_endpoint
      user_info_endpoint         = var.console.oidc.user_info_endpoint
      client_id                  = var.console.oidc.client_id
      client_secret              = var.console_oidc_client_secret
      scope                      = "openid email profile"
      session_timeout            = 43200
      on_unauthenticated_request = "authenticate"
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.console[0].arn
  }

  condition {
    path_pattern {
      values = ["/*"]
    }
  }

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "console_https" {
  for_each = local.console_enabled ? toset(var.console.allowed_cidrs) : toset([])

  security_group_id = module.edge.security_group_id
  description       = "HTTPS to the operator console from the operators' networks"
  ip_protocol       = "tcp"
  from_port         = var.console.listener_port
  to_port           = var.console.listener_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_console" {
  count = local.console_enabled ? 1 : 0

  security_group_id            = module.edge.security_group_id
  description                  = "HTTP to the console tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.console_port
  to_port                      = local.console_port
  referenced_security_group_id = module.console[0].security_group_id
}

module "console" {
  source = "../modules/ecs_service"
  count  = local.console_enabled ? 1 : 0

  name_prefix          = var.name_prefix
  name                 = "console"
  cluster_arn          = module.cluster.arn
  cluster_name         = module.cluster.name
  image                = local.image
  image_repository_arn = module.image_repository.arn
  command              = ["console"]
  cpu                  = 256
  memory               = 512
  cpu_architecture     = var.cpu_architecture
  container_ports      = [local.console_port]
  health_check_command = ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "3", "http://127.0.0.1:${local.console_port}/health"]
  stop_timeout_seconds = 15
  task_role_arn        = module.iam.console_task_role_arn

  environment = merge(local.common_environment, local.otel_environment, {
    EVENTFLEET_CONSOLE_LISTEN         = "0.0.0.0:${local.console_port}"
    EVENTFLEET_CONSOLE_TRUST_ALB_OIDC = "true"
    EVENTFLEET_PUBLIC_URL             = local.public_url
  })

  vpc_id             = var.vpc_id
  subnet_ids         = var.private_subnet_ids
  egress_https_cidrs = var.task_egress_cidrs
  load_balancer = {
    target_group_arn  = aws_lb_target_group.console[0].arn
    container_port    = local.console_port
    security_group_id = module.edge.security_group_id
  }

  # Replays started from a console run in its memory: one task, so its progress page is where it was started.
  min_count             = 1
  max_count             = 1
  wait_for_steady_state = var.wait_for_steady_state

  log_group_name     = "/ecs/${var.name_prefix}/console"
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.logs_key.arn
  tags               = local.tags

  depends_on = [aws_lb_listener_rule.console_oidc]
}
