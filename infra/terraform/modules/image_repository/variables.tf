variable "name" {
  description = "Repository name."
  type        = string
}

variable "keep_images" {
  description = "How many tagged images to keep (older ones expire); keep enough to roll back to."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for the repository."
  type        = map(string)
  default     = {}
}
