output "alb_arn" {
  description = "Load balancer ARN."
  value       = aws_lb.this.arn
}

output "alb_arn_suffix" {
  description = "Load balancer ARN suffix (the LoadBalancer dimension of AWS/ApplicationELB metrics)."
  value       = aws_lb.this.arn_suffix
}

output "alb_dns_name" {
  description = "DNS name of the load balancer (point the public host name at it)."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer (for a Route 53 alias record)."
  value       = aws_lb.this.zone_id
}

output "security_group_id" {
  description = "Security group of the load balancer."
  value       = aws_security_group.alb.id
}

output "target_group_arn" {
  description = "Target group of the ingress tasks (available once the listener forwards to it: ECS refuses a target group without a load balancer)."
  value       = aws_lb_target_group.ingress.arn
  depends_on  = [aws_lb_listener.https]
}

output "target_group_arn_suffix" {
  description = "Target group ARN suffix (the TargetGroup dimension of AWS/ApplicationELB metrics)."
  value       = aws_lb_target_group.ingress.arn_suffix
}

output "web_acl_arn" {
  description = "WAF web ACL ARN."
  value       = aws_wafv2_web_acl.this.arn
}

output "access_log_bucket" {
  description = "Bucket holding the load balancer's access logs."
  value       = module.access_logs.id
}
