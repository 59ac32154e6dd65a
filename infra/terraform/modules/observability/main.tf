# The fleet's dashboard and alarms. Alarms notify the alarm topic, which the ingress itself is subscribed to
# (its /sns route posts them to Slack); add an independent subscription (alarm_extra_subscriptions in the root)
# so an alarm about the ingress itself still reaches a person.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
  fleet  = ["Fleet", var.name_prefix]

  alb       = ["LoadBalancer", var.alb_arn_suffix]
  alb_tg    = ["TargetGroup", var.target_group_arn_suffix, "LoadBalancer", var.alb_arn_suffix]
  queue     = ["QueueName", var.queue_name]
  dlq       = ["QueueName", var.dead_letter_queue_name]
  ingress   = ["ClusterName", var.cluster_name, "ServiceName", var.ingress_service_name]
  worker    = ["ClusterName", var.cluster_name, "ServiceName", var.worker_service_name]
  actions   = [var.alarm_topic_arn]
  namespace = var.metrics_namespace

  widgets = [
    {
      type = "metric", x = 0, y = 0, width = 8, height = 6
      properties = {
        title  = "Ingress latency (target response time)"
        region = local.region
        view   = "timeSeries"
        period = 60
        yAxis  = { left = { label = "seconds", showUnits = false } }
        metrics = [
          concat(["AWS/ApplicationELB", "TargetResponseTime"], local.alb, [{ stat = "p50", label = "p50" }]),
          concat(["...", { stat = "p95", label = "p95" }]),
          concat(["...", { stat = "p99", label = "p99" }]),
        ]
      }
    },
    {
      type = "metric", x = 8, y = 0, width = 8, height = 6
      properties = {
        title  = "Ingress answers"
        region = local.region
        view   = "timeSeries"
        stat   = "Sum"
        period = 60
        metrics = [
          concat(["AWS/ApplicationELB", "RequestCount"], local.alb, [{ label = "requests" }]),
          concat(["AWS/ApplicationELB", "HTTPCode_Target_4XX_Count"], local.alb, [{ label = "4xx (ingress)" }]),
          concat(["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"], local.alb, [{ label = "5xx (ingress)" }]),
          concat(["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"], local.alb, [{ label = "5xx (load balancer)" }]),
        ]
      }
    },
    {
      type = "metric", x = 16, y = 0, width = 8, height = 6
      properties = {
        title  = "Running tasks"
        region = local.region
        view   = "timeSeries"
        stat   = "Average"
        period = 60
        metrics = [
          concat(["ECS/ContainerInsights", "RunningTaskCount"], local.ingress, [{ label = "ingress" }]),
          concat(["ECS/ContainerInsights", "RunningTaskCount"], local.worker, [{ label = "workers" }]),
          concat(["AWS/ApplicationELB", "UnHealthyHostCount"], local.alb_tg, [{ label = "unhealthy ingress targets", stat = "Maximum" }]),
        ]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 8, height = 6
      properties = {
        title  = "Queue depth"
        region = local.region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        metrics = [
          concat(["AWS/SQS", "ApproximateNumberOfMessagesVisible"], local.queue, [{ label = "waiting" }]),
          concat(["AWS/SQS", "ApproximateNumberOfMessagesNotVisible"], local.queue, [{ label = "in flight" }]),
        ]
      }
    },
    {
      type = "metric", x = 8, y = 6, width = 8, height = 6
      properties = {
        title  = "Oldest message age"
        region = local.region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        yAxis  = { left = { label = "seconds", showUnits = false } }
        metrics = [
          concat(["AWS/SQS", "ApproximateAgeOfOldestMessage"], local.queue, [{ label = "event queue" }]),
        ]
        annotations = { horizontal = [{ label = "alarm", value = var.oldest_message_age_threshold_seconds }] }
      }
    },
    {
      type = "metric", x = 16, y = 6, width = 8, height = 6
      properties = {
        title  = "Dead-letter queue depth"
        region = local.region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        metrics = [
          concat(["AWS/SQS", "ApproximateNumberOfMessagesVisible"], local.dlq, [{ label = "dead letters" }]),
          concat(["AWS/SQS", "ApproximateNumberOfMessagesNotVisible"], local.dlq, [{ label = "being read (dlq commands)" }]),
        ]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 8, height = 6
      properties = {
        title  = "Events processed / failed / dead-lettered"
        region = local.region
        view   = "timeSeries"
        stat   = "Sum"
        period = 60
        metrics = [
          concat([local.namespace, "EventsProcessed"], local.fleet, [{ label = "processed" }]),
          concat([local.namespace, "EventsFailed"], local.fleet, [{ label = "failed (retrying)" }]),
          concat([local.namespace, "EventsDeadLettered"], local.fleet, [{ label = "dead-lettered" }]),
        ]
      }
    },
    {
      type = "metric", x = 8, y = 12, width = 8, height = 6
      properties = {
        title  = "Handler duration and event age"
        region = local.region
        view   = "timeSeries"
        period = 60
        yAxis  = { left = { label = "milliseconds", showUnits = false } }
        metrics = [
          concat([local.namespace, "HandlerDuration"], local.fleet, [{ stat = "p95", label = "handler p95" }]),
          concat([local.namespace, "EventAge"], local.fleet, [{ stat = "p95", label = "event age at processing p95" }]),
        ]
      }
    },
    {
      type = "metric", x = 16, y = 12, width = 8, height = 6
      properties = {
        title  = "Queue as the workers see it"
        region = local.region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        metrics = [
          concat([local.namespace, "QueueDepth"], local.fleet, [{ label = "waiting" }]),
          concat([local.namespace, "QueueInFlight"], local.fleet, [{ label = "in flight" }]),
          concat([local.namespace, "DeadLetterDepth"], local.fleet, [{ label = "dead letters" }]),
        ]
      }
    },
    {
      type = "alarm", x = 0, y = 18, width = 24, height = 3
      properties = {
        title = "Alarms"
        alarms = concat(
          [for a in aws_cloudwatch_metric_alarm.expression : a.arn],
          [for a in aws_cloudwatch_metric_alarm.metric : a.arn],
        )
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({ widgets = local.widgets })
}

# Alarms -----------------------------------------------------------------------------------------------------------

locals {
  # Alarms on one metric. Every alarm notifies the alarm topic on ALARM and on OK.
  metric_alarms = {
    oldest_message_age = {
      name        = "oldest-message-age"
      description = "The oldest waiting event is older than ${var.oldest_message_age_threshold_seconds} s: workers are down, too few, or a message group is stuck. Runbook: docs/operations.md."
      namespace   = "AWS/SQS"
      metric      = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = var.queue_name }
      statistic   = "Maximum"
      periods     = 5
      comparison  = "GreaterThanThreshold"
      threshold   = var.oldest_message_age_threshold_seconds
      missing     = "notBreaching"
    }
    ingress_p95_latency = {
      name        = "ingress-p95-latency"
      description = "Ingress p95 response time above ${var.p95_latency_threshold_seconds} s for 5 minutes (Slack gives up after 3 s)."
      namespace   = "AWS/ApplicationELB"
      metric      = "TargetResponseTime"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      statistic   = "p95"
      periods     = 5
      comparison  = "GreaterThanThreshold"
      threshold   = var.p95_latency_threshold_seconds
      missing     = "notBreaching"
    }
    ingress_unhealthy_targets = {
      name        = "ingress-unhealthy-tasks"
      description = "Ingress tasks fail the load balancer's GET /version health check."
      namespace   = "AWS/ApplicationELB"
      metric      = "UnHealthyHostCount"
      dimensions  = { LoadBalancer = var.alb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
      statistic   = "Maximum"
      periods     = 3
      comparison  = "GreaterThanThreshold"
      threshold   = 0
      missing     = "notBreaching"
    }
    workers_running = {
      name        = "workers-below-minimum"
      description = "Fewer worker tasks running than the minimum for 5 minutes: tasks fail their health check or crash on start."
      namespace   = "ECS/ContainerInsights"
      metric      = "RunningTaskCount"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = var.worker_service_name }
      statistic   = "Minimum"
      periods     = 5
      comparison  = "LessThanThreshold"
      threshold   = var.worker_min_count
      # No data means no task reports: as bad as none running.
      missing = "breaching"
    }
  }

  # Alarms on an expression over several metrics (each input summed or maximised over a minute).
  expression_alarms = {
    # Visible plus in flight: `eventfleet dlq list|show|replay` read the DLQ by receiving its messages for a
    # short while, which must not flip the alarm to OK.
    dead_letters = {
      name        = "dlq-not-empty"
      description = "Events were dead-lettered. Runbook: docs/operations.md, \"The DLQ alarm fired\"."
      label       = "Messages on the DLQ"
      expression  = "FILL(visible, 0) + FILL(in_flight, 0)"
      periods     = 1
      threshold   = 0
      inputs = {
        visible   = { namespace = "AWS/SQS", metric = "ApproximateNumberOfMessagesVisible", stat = "Maximum", dimensions = { QueueName = var.dead_letter_queue_name } }
        in_flight = { namespace = "AWS/SQS", metric = "ApproximateNumberOfMessagesNotVisible", stat = "Maximum", dimensions = { QueueName = var.dead_letter_queue_name } }
      }
    }
    ingress_5xx_rate = {
      name        = "ingress-5xx-rate"
      description = "More than ${var.error_rate_threshold_percent} % of ingress requests answered 5xx for 5 minutes (senders retry 503s, but the store or the tasks are failing)."
      label       = "5xx rate (%)"
      expression  = "100 * (FILL(target_5xx, 0) + FILL(elb_5xx, 0)) / requests"
      periods     = 5
      threshold   = var.error_rate_threshold_percent
      inputs = {
        target_5xx = { namespace = "AWS/ApplicationELB", metric = "HTTPCode_Target_5XX_Count", stat = "Sum", dimensions = { LoadBalancer = var.alb_arn_suffix } }
        elb_5xx    = { namespace = "AWS/ApplicationELB", metric = "HTTPCode_ELB_5XX_Count", stat = "Sum", dimensions = { LoadBalancer = var.alb_arn_suffix } }
        requests   = { namespace = "AWS/ApplicationELB", metric = "RequestCount", stat = "Sum", dimensions = { LoadBalancer = var.alb_arn_suffix } }
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "metric" {
  for_each = local.metric_alarms

  alarm_name          = "${var.name_prefix}-${each.value.name}"
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = startswith(each.value.statistic, "p") ? null : each.value.statistic
  extended_statistic  = startswith(each.value.statistic, "p") ? each.value.statistic : null
  period              = 60
  evaluation_periods  = each.value.periods
  datapoints_to_alarm = each.value.periods
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "expression" {
  for_each = local.expression_alarms

  alarm_name          = "${var.name_prefix}-${each.value.name}"
  alarm_description   = each.value.description
  evaluation_periods  = each.value.periods
  datapoints_to_alarm = each.value.periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  actions_enabled     = true
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = each.key
    label       = each.value.label
    expression  = each.value.expression
    return_data = true
  }

  dynamic "metric_query" {
    for_each = each.value.inputs
    content {
      id = metric_query.key
      metric {
        namespace   = metric_query.value.namespace
        metric_name = metric_query.value.metric
        dimensions  = metric_query.value.dimensions
        stat        = metric_query.value.stat
        period      = 60
      }
    }
  }

  tags = var.tags
}

# The alarms were one resource each before; existing deployments keep them (no destroy and re-create).
moved {
  from = aws_cloudwatch_metric_alarm.oldest_message_age
  to   = aws_cloudwatch_metric_alarm.metric["oldest_message_age"]
}

moved {
  from = aws_cloudwatch_metric_alarm.ingress_p95_latency
  to   = aws_cloudwatch_metric_alarm.metric["ingress_p95_latency"]
}

moved {
  from = aws_cloudwatch_metric_alarm.ingress_unhealthy_targets
  to   = aws_cloudwatch_metric_alarm.metric["ingress_unhealthy_targets"]
}

moved {
  from = aws_cloudwatch_metric_alarm.workers_running
  to   = aws_cloudwatch_metric_alarm.metric["workers_running"]
}

moved {
  from = aws_cloudwatch_metric_alarm.dead_letters
  to   = aws_cloudwatch_metric_alarm.expression["dead_letters"]
}

moved {
  from = aws_cloudwatch_metric_alarm.ingress_5xx_rate
  to   = aws_cloudwatch_metric_alarm.expression["ingress_5xx_rate"]
}
